"""Benchmarks: the gateway against the LiteLLM baseline (see run.py)."""
