"""Deterministic synthetic data sets and readers for real formats."""
