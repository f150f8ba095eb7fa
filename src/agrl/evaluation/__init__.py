"""Evaluation: metrics with bootstrap intervals (metrics.py), `agrl eval` (evaluate.py), classical baselines
(baselines.py), and reports across runs (report.py)."""
