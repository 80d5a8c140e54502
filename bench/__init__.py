"""Benchmarks: run each as `bench/NAME` (see docs/BENCHMARKS.md)."""
