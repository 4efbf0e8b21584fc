"""Training the fusion model: configuration, recipes, the training loop and the train/evaluate workflow."""
