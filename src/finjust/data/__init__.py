"""Reading, templating and splitting training data."""
