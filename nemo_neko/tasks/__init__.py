"""Correction tasks, each owning its prompt and its metric. See README.md in this folder.

Importing this package registers the built-in tasks: asr, st, mt, ocr, tec_grammar,
tec_coherence.
"""

from nemo_neko.tasks import asr, ocr, tec, translation  # noqa: F401  (registration)
from nemo_neko.tasks.base import Task, language_name
from nemo_neko.tasks.registry import get_task, known_tasks, register_task

__all__ = ["Task", "get_task", "known_tasks", "language_name", "register_task"]
