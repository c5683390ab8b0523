"""Decisions made from run records: the regression gate (rules, judging, baseline store), same-job A/B, and
compare (rank deployment choices under an SLO). Above the producers (targets, loadtests, bench) and the
renderers (reports)."""
