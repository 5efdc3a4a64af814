"""Hugging Face checkpoints in and out of NeKo, and sparse upcycling (see README.md).

    from nemo_neko.convert.importer import import_hf      # HF folder -> Megatron checkpoint
    from nemo_neko.convert.exporter import export_hf      # NeKo checkpoint -> HF folder
    from nemo_neko.convert.upcycle import UpcycleConfig   # import_hf(..., upcycle=...)

Command line: ``python -m nemo_neko.convert import|upcycle|export --help``. Importing this package
is cheap; torch and Megatron-Core load with the modules that need them.
"""
