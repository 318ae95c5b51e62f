"""Benchmarks run by `make bench` (every bench/*.py, not _*.py); see bench/README.md."""
