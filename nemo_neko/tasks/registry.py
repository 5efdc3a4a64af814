"""The task registry: ``@register_task`` on a :class:`~nemo_neko.tasks.base.Task` subclass."""

from __future__ import annotations

from nemo_neko.tasks.base import Task

_TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    if cls.metric not in ("wer", "bleu"):
        raise ValueError(f"task {cls.name!r}: metric must be 'wer' or 'bleu', got {cls.metric!r}")
    _TASKS[cls.name] = cls()
    return cls


def known_tasks() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The task registered as ``name``; ``KeyError`` listing the known ones otherwise."""
    try:
        return _TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r} (known tasks: {', '.join(known_tasks())})") from None
