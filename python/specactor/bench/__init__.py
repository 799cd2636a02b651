"""Benchmark helpers the TypeScript benchmarks call (transformers baselines, bandwidth graph)."""
