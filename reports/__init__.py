"""Run records, statistics, renderers, regression gates and ranked comparisons."""
