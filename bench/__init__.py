"""Benchmarks (not tests): learning efficiency and system speed. Each module runs with `python -m bench.NAME`."""
