"""Scripts that measured the README's load-engine figures (run by hand on a quiet machine, never by pytest:
they time real servers). Each prints JSON; ``python -m tests.measurements.<name> --help`` says how."""
