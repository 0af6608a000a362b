"""Benchmarks: scripts that print tables of measured ratios and write JSON to bench/results/ (run with python -m bench.NAME)."""
