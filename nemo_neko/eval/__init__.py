"""Evaluation: Open ASR Leaderboard scoring and the correction report. See README.md here.

Run ``python -m nemo_neko.eval --help``. Importing this package imports nothing: load the module
you need (``nemo_neko.eval.scoring``, ``nemo_neko.eval.report``, ``nemo_neko.eval.normalizer``).
"""
