"""Benchmarks of falco-router against bare references; run with ``python -m bench``."""
