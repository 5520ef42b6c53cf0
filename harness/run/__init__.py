"""Runs: the model and the drivers combined into checks, searches and reports.

The checker (one script, every property), the runner (a Hypothesis search
with budgets), fixed scenarios, the stateful machine, verdicts, reports and
captured replays. Imports ``harness.model``, ``harness.drive`` and ``strategies``.
"""
