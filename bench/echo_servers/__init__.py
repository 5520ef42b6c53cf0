"""Baseline echo servers for the benchmark, on the same command-line contract as the reference."""
