"""Scoring datasets: embeddings (cached), pair distances, metrics, multi-reference trials, calibration, reports."""
