"""Benchmarks run by `make bench` (`python -m bench`: the targets before and after, then every
other bench/*.py, not _*.py); see bench/README.md."""
