"""Building blocks Megatron's local (non-Transformer-Engine) spec lacks. See README.md."""

from nemo_neko.layers.rms_norm import RMSNorm

__all__ = ["RMSNorm"]
