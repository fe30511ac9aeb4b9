"""Benchmarks of the engine against transformers `generate` on the same weights."""
