"""Checkpoints: find, read, convert (original InternVL 2.5 layout -> native transformers) and load."""
