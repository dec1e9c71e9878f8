"""Training on CPU budgets: batches that score every pair, losses, resumable runs."""
