"""Training NeKo on Megatron-Core. See README.md in this folder."""
