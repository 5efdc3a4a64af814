"""Helpers shipped with the library for tests and benchmarks (CPU, gloo, tiny models)."""
