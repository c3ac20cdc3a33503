"""Stage 1: reference Norse models and their training."""
