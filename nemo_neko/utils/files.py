"""Files written whole or not at all: through a temporary beside the target, then renamed."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` (parents created) so that readers see the old or the new
    content, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # one per writer process
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, document, indent: int = 2, **dumps) -> Path:
    """:func:`write_text_atomic` of ``document`` as JSON (``json.dumps`` options in ``dumps``)."""
    return write_text_atomic(path, json.dumps(document, indent=indent, **dumps) + "\n")
