"""Workload models, one module per (framework, workload)."""
