"""The regression gate: rules (``rules``), which records and series are compared (``matching``), the
verdicts (``judge``) and the baseline store (``baseline``)."""
