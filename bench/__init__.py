"""Benchmarks of epoll-harness (issue 2 §4): see echo_bench.py and RESULTS.md."""
