"""Benchmarks: each ``bench/bench_*.py`` module has ``main() -> None`` printing its own table."""
