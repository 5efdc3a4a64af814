"""Inference: greedy decoding with a KV cache, and correcting record files with a trained run."""
