"""Renderers: read run records, compare documents and gate results, and write Markdown, HTML (+PNG plots), CSV
and JSON. They start no process and import no producer (only the core, ``deploybench``)."""
