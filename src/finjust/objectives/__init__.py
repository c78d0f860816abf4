"""Objectives: how batches are built and what loss is computed (SFT now; more later)."""
