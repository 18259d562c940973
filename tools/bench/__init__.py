"""Timings and footprints: each ``bench_*.py`` measures one part; ``bench.py`` is ``make bench``."""
