"""The files of a checkpoint, checked before anything loads them; light (no torch at import).

A run's ``checkpoints/`` folder (see :mod:`nemo_neko.model.checkpoint`) holds complete
checkpoints ``step_N/`` and ``latest``, the name of the newest. A hand-edited or damaged folder
(``latest`` empty or naming nothing, a checkpoint without its trainer state or index, a shard
missing or cut short) is a :class:`CheckpointError`: one line naming the checkpoint and what to
do, raised before Megatron reads a byte. :func:`fingerprint` gives a checkpoint an identity
(predictions record which checkpoint wrote them).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

from nemo_neko.paths import CHECKPOINT_PREFIX

INCOMPLETE = ".incomplete"
MODEL_FILES = ("metadata.json", ".metadata")
"""What every Megatron distributed checkpoint holds besides its shards."""
COMMON_FILE = "common.pt"
COMMON_OBJECT = "common_state"
"""Where the non-tensor state lives: ``common.pt`` (Megatron-Core <= 0.16 and the format's
legacy layout) or a ``common_state`` object inside the shards (newer releases); checked with the
shards (:func:`check_shards`)."""
TRAINER_STATE = "trainer_state.pt"
"""What a checkpoint saved by training holds besides the model (step, scheduler, data)."""


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names it and what to do."""


def complete_checkpoints(root: str | os.PathLike) -> list[str]:
    """Names of the complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.glob(f"{CHECKPOINT_PREFIX}*")
        if not p.name.endswith(INCOMPLETE)
        and (p / TRAINER_STATE).exists()
        and all((p / name).exists() for name in MODEL_FILES)
    )


def _remedy(root: Path, broken: str | None = None) -> str:
    pointer = root / "latest"
    others = [name for name in complete_checkpoints(root) if name != broken]
    if others:
        return (
            f"point {pointer} at a complete checkpoint (e.g. `echo {others[-1]} > {pointer}`; "
            f"complete: {', '.join(others)})"
        )
    return f"no other complete checkpoint there: remove {root} to train from scratch"


def remedy_for(path: str | os.PathLike) -> str:
    """What to do about a broken checkpoint ``path``: another one of its run, or a new copy."""
    path = Path(path)
    if (path.parent / "latest").exists() or path.name.startswith(CHECKPOINT_PREFIX):
        return _remedy(path.parent, path.name)
    return f"convert or copy {path} again"


def read_latest(root: str | os.PathLike, *, shards: bool = False) -> Path | None:
    """The checkpoint ``root/latest`` names (None without ``latest``), checked complete.

    Args:
        root: a run's ``checkpoints`` folder.
        shards: also check every shard the index names is there in full (reads ``.metadata``,
            imports torch).

    Raises:
        CheckpointError: ``latest`` is empty, unreadable or names no complete checkpoint.
    """
    root = Path(root)
    pointer = root / "latest"
    if not pointer.exists():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{pointer}: cannot be read ({err}); {_remedy(root)}") from None
    if not name:
        raise CheckpointError(f"{pointer} is empty; {_remedy(root)}")
    if "\n" in name or "/" in name or name in (".", ".."):
        raise CheckpointError(
            f"{pointer} holds {name[:60]!r}, not a checkpoint name; {_remedy(root)}"
        )
    path = root / name
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {name}, which does not exist; {_remedy(root)}")
    check_checkpoint(path, trainer_state=True, shards=shards, remedy=_remedy(root, name))
    return path


def check_checkpoint(
    path: str | os.PathLike,
    *,
    trainer_state: bool = True,
    shards: bool = False,
    remedy: str | None = None,
) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete distributed checkpoint.

    Args:
        path: the checkpoint folder.
        trainer_state: require ``trainer_state.pt`` (a training checkpoint; a model imported by
            ``nemo_neko.convert`` has none).
        shards: also check the shards against the index (see :func:`check_shards`).
        remedy: what to tell the user to do (default: :func:`remedy_for`).
    """
    path = Path(path)
    remedy = remedy or remedy_for(path)
    needed = [*MODEL_FILES, *((TRAINER_STATE,) if trainer_state else ())]
    missing = [name for name in needed if not (path / name).exists()]
    if missing:
        raise CheckpointError(
            f"{path} is not a complete checkpoint (no {', '.join(missing)}); {remedy}"
        )
    if shards:
        check_shards(path, remedy)


def check_shards(path: str | os.PathLike, remedy: str) -> None:
    """Raise :class:`CheckpointError` when a shard named in ``path/.metadata`` is missing or
    shorter than the bytes the index places in it."""
    from torch.distributed.checkpoint import FileSystemReader

    path = Path(path)
    try:
        metadata = FileSystemReader(str(path)).read_metadata()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: its index .metadata cannot be read ({type(err).__name__}: {err}); {remedy}"
        ) from None
    keys = getattr(metadata, "state_dict_metadata", None) or {}
    if not (path / COMMON_FILE).exists() and not any(
        str(key).startswith(COMMON_OBJECT) for key in keys
    ):
        raise CheckpointError(
            f"{path}: no common state ({COMMON_FILE}, or {COMMON_OBJECT} in its index); {remedy}"
        )
    needed: dict[str, int] = {}
    for info in (getattr(metadata, "storage_data", None) or {}).values():
        end = info.offset + info.length
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, size in sorted(needed.items()):
        shard = path / name
        if not shard.exists():
            raise CheckpointError(f"{path}: shard {name} is missing; {remedy}")
        if shard.stat().st_size < size:
            raise CheckpointError(
                f"{path}: shard {name} is cut short ({shard.stat().st_size} of {size} bytes); "
                f"{remedy}"
            )


FINGERPRINT_BLOCK = 1 << 20
"""Bytes read from each end of a large file for :func:`fingerprint`."""


def fingerprint(path: str | os.PathLike) -> str:
    """A short identity of the checkpoint in ``path``: SHA-256 over every file's name and size,
    the whole of files up to 2 MiB and both ends of larger ones (shards of different weights
    differ there), RNG states left out. Cheap for any model size; equal for a copy."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        if relative.startswith("rng/"):
            continue
        size = file.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        with open(file, "rb") as fh:
            if size <= 2 * FINGERPRINT_BLOCK:
                digest.update(fh.read())
            else:
                digest.update(fh.read(FINGERPRINT_BLOCK))
                fh.seek(size - FINGERPRINT_BLOCK)
                digest.update(fh.read(FINGERPRINT_BLOCK))
    return digest.hexdigest()[:16]
