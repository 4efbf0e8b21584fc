"""Scoring files with a trained model: the scorer, per-second timelines and the score table."""
