"""Training code for the built-in ``toy-shapes`` model: synthetic data, pixel measurements, the training script."""
