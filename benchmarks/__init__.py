"""Benchmarks: measured, reported and committed (benchmarks/results/), never timed tests."""
