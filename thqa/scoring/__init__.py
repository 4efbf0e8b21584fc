"""Scoring files with a trained model: the model worked out once and the scorer (scorer), results (result), per-second
timelines (timeline), and the score table: its columns (columns) and its writer (output)."""
