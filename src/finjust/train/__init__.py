"""The training loop, its checkpoints and the run that ties data, model and scorecard."""
