"""Objectives: how batches are built and what loss is computed (sft, classification); see registry.py."""
