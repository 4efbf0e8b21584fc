"""What the scores say: the challenge's metrics, generator comparisons, prediction intervals, lip sync, plots."""
