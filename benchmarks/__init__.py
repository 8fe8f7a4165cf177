"""Benchmark suites: pytest-benchmark (test_*.py) and asv (bench_*.py); asv needs a package."""
