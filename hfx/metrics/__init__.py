"""Metric functions the tasks (and the baseline scripts) score with: pure functions of predictions and
references, one module per family. Heavy libraries are imported inside the functions."""
