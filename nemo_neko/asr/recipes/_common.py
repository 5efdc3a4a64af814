"""Shared plumbing of the corpus recipes: part manifests, validation, skip-if-done, atomic writes.

Every recipe writes one lhotse cut manifest per corpus part,
``<output_dir>/<corpus>_cuts_<part>.jsonl.gz``, with exactly one supervision per cut (long
recordings cut to their supervisions with ``trim_to_supervisions``). lhotse's own recording and
supervision manifests go to ``<output_dir>/lhotse/`` (lhotse skips those it already wrote).

Idempotence: a part whose manifest exists and validates (every cut passes
``lhotse.qa.validate_cut`` without reading audio, has one supervision with text and a recording,
cut ids unique) is skipped, and the corpus is not even parsed when every requested part is
done. A new manifest is streamed to a temporary file, each cut validated as it is written, and
renamed only when all passed: a failed or killed run never leaves an invalid manifest under
the final name. ``force=True`` rebuilds the cut manifests, but lhotse reuses its own manifests in
``lhotse/``: to change a recipe option (text normalisation, ...) start from an empty folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_neko.asr.cutio import LHOTSE_HINT, check_cut, scan_cuts, write_cuts
from nemo_neko.data.records import RecordError

log = logging.getLogger(__name__)


class ManualDownloadRequired(RuntimeError):
    """The corpus cannot be downloaded by lhotse; the message says how to get it."""


class RecipeInputError(ValueError):
    """The corpus on disk is not what the recipe needs; the message (one line) says what."""


@dataclass(frozen=True)
class CorpusInfo:
    """A corpus and its parts.

    Attributes:
        name: registry name and manifest prefix.
        train_parts: training parts (N-best generation for the NeKo mixture).
        eval_parts: the Open ASR Leaderboard's test sets of this corpus (evaluation inputs).
        dev_parts: development parts.
        source: where the corpus comes from (shown by ``download`` when manual).
    """

    name: str
    train_parts: tuple[str, ...]
    eval_parts: tuple[str, ...]
    dev_parts: tuple[str, ...] = ()
    source: str = ""

    @property
    def all_parts(self) -> tuple[str, ...]:
        return self.train_parts + self.dev_parts + self.eval_parts

    def select(self, parts: Sequence[str] | str | None) -> list[str]:
        """Part names from a list, or a group: ``train``, ``eval``, ``dev``, ``all`` (None)."""
        groups = {
            "train": self.train_parts,
            "eval": self.eval_parts,
            "dev": self.dev_parts,
            "all": self.all_parts,
        }
        if parts is None:
            return list(self.all_parts)
        if isinstance(parts, str):
            parts = [parts]
        out: list[str] = []
        for part in parts:
            for name in groups.get(part, (part,)):
                if name not in out:
                    out.append(name)
        return out


def require_lhotse() -> None:
    try:
        import lhotse  # noqa: F401
    except ImportError as err:
        raise ImportError(LHOTSE_HINT) from err


def cuts_manifest(output_dir: str | Path, corpus: str, part: str) -> Path:
    """``<output_dir>/<corpus>_cuts_<part>.jsonl.gz``."""
    return Path(output_dir) / f"{corpus}_cuts_{part}.jsonl.gz"


def lhotse_dir(output_dir: str | Path) -> Path:
    """Where lhotse's own recording/supervision manifests go."""
    return Path(output_dir) / "lhotse"


def validate_cut(cut: Any, path: str, position: int) -> None:
    """lhotse's structural checks plus the one-supervision rule; :class:`RecordError` if broken."""
    from lhotse.qa import validate_cut as lhotse_validate

    check_cut(cut, path, position)
    try:
        lhotse_validate(cut, read_data=False)
    except AssertionError as err:
        message = f"cut {cut.id!r} fails lhotse validation: {err}"
        raise RecordError(path, position, None, message) from err


def manifest_complete(path: str | Path) -> bool:
    """Whether a part manifest exists and validates (the reason is logged when not)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        from lhotse import CutSet

        scan_cuts(path)  # one supervision, text, recording, unique ids
        for position, cut in enumerate(CutSet.from_jsonl_lazy(path), start=1):
            validate_cut(cut, str(path), position)
    except Exception as err:  # any damage means: rebuild
        log.warning("%s: not a valid manifest (%s); rebuilding it", path, err)
        return False
    return True


def write_validated(path: str | Path, cuts: Iterable[Any]) -> int:
    """Write ``cuts`` to ``path`` atomically, validating each first; nothing lands on error.

    Raises:
        RecordError: the first invalid cut (the target file and the cut's position named).
    """
    path = Path(path)
    seen: set[str] = set()

    def checked() -> Iterable[Any]:
        for position, cut in enumerate(cuts, start=1):
            validate_cut(cut, str(path), position)
            if cut.id in seen:
                raise RecordError(str(path), position, "id", f"duplicate cut id {cut.id!r}")
            seen.add(cut.id)
            yield cut

    return write_cuts(path, checked())


def cuts_from_manifests(recordings: Any, supervisions: Any) -> Any:
    """One cut per supervision: lhotse's ``fix_manifests``, its recording/supervision check, then
    ``CutSet.from_manifests(...).trim_to_supervisions`` (overlapping speech not kept)."""
    from lhotse import CutSet, fix_manifests, validate_recordings_and_supervisions

    recordings, supervisions = fix_manifests(recordings, supervisions)
    validate_recordings_and_supervisions(recordings, supervisions)
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    return cuts.trim_to_supervisions(keep_overlapping=False, keep_all_channels=False)


def prepare_parts(
    corpus: CorpusInfo,
    output_dir: str | Path,
    parts: Sequence[str],
    build: Callable[[list[str]], dict[str, Any]],
    *,
    force: bool = False,
    manifest: Callable[[str], Path] | None = None,
) -> dict[str, Path]:
    """Write the cut manifests of ``parts``, skipping those already complete.

    Args:
        corpus: the corpus.
        output_dir: manifest folder.
        parts: parts wanted.
        build: ``fn(parts to do) -> {part: CutSet}``: runs lhotse's recipe for those parts.
        force: rebuild even complete manifests.
        manifest: ``fn(part) -> manifest path`` (default ``cuts_manifest(output_dir,
            corpus.name, part)``).

    Returns:
        Part -> manifest path, for every requested part.
    """
    require_lhotse()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if manifest is None:

        def manifest(part: str) -> Path:
            return cuts_manifest(output_dir, corpus.name, part)

    paths = {part: manifest(part) for part in parts}
    todo = [part for part in parts if force or not manifest_complete(paths[part])]
    for part in parts:
        if part not in todo:
            log.info("%s %s: %s is complete, skipped", corpus.name, part, paths[part])
    if not todo:
        return paths
    built = build(todo)
    for part in todo:
        if part not in built:
            raise RuntimeError(
                f"{corpus.name}: lhotse's recipe produced no manifests for part {part!r} "
                f"(it produced: {', '.join(sorted(built)) or 'nothing'})"
            )
        count = write_validated(paths[part], built[part])
        log.info("%s %s: wrote %d cuts to %s", corpus.name, part, count, paths[part])
    return paths


def check_parts_exist(corpus_dir: str | Path, parts: Sequence[str], layout: str) -> None:
    """Fail early, naming the folder, when a requested part is not on disk."""
    missing = [part for part in parts if not (Path(corpus_dir) / part).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{corpus_dir}: part folder(s) {', '.join(missing)} not found (expected {layout})"
        )
