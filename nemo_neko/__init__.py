"""nemo-neko: NeKo, a task-guided Mixture-of-Experts corrector of recogniser output.

Importing the package is cheap (no torch, no Megatron); import the sub-packages you need:
``nemo_neko.moe`` (the MoE layer on Megatron-Core), ``nemo_neko.parallel`` (process groups).
"""

__version__ = "0.1.0"
