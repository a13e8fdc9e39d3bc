"""Benchmarks: scripts that print figures (median of several runs, baseline in the same run)."""
