"""Evaluation: metrics, batched generation and the base-vs-tuned scorecard."""
