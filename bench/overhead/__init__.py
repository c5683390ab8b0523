"""The standing overhead benchmark: minimal apps (written the way the seed writes them) and our reference
targets, served side by side and loaded by the same generator in one run; the ratio target / minimal per
framework x server x model x handler shows what our own target code costs on top of its framework."""
