"""The Megatron-Core seam: ``megatron`` (every import of Megatron internals) and ``cpu`` (shims)."""
