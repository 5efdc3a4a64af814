"""The leaderboard test sets a run is scored on: lhotse cut manifests, named ``<dataset>_<split>``.

A set is given as ``name=path`` (``librispeech_test.clean=cuts.jsonl.gz``) or found in a folder
of recipe outputs (``nemo_neko.asr.recipes``: ``<corpus>_cuts_<part>.jsonl.gz`` becomes the set
``<corpus>_<part>``). The split is the part after the last ``_`` (``test`` when there is none):
the leaderboard's file names are ``MODEL_<model>_DATASET_<dataset>_<split>.jsonl``.

Long-form sets cut into chunks (the leaderboard's chunked Earnings-22) carry ``parent_id`` and
``chunk_index`` (and optionally the session's ``parent_text``) in the supervision's ``custom``;
the records keep each chunk's own reference, the manifests give every chunk row its session's
reference as ``text`` (as the leaderboard's files do), and the ``oal2026`` protocol joins the
chunks' predictions per session before scoring.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RECIPE_NAME = re.compile(r"^(?P<corpus>.+)_cuts_(?P<part>.+)\.jsonl(\.gz)?$")
SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*(_[A-Za-z0-9.\-]+)*$")


@dataclass(frozen=True)
class TestSet:
    """One leaderboard test set."""

    name: str
    """``<dataset>_<split>`` (the leaderboard's key, e.g. ``librispeech_test.clean``)."""
    cuts: str
    """Its lhotse cut manifest (one supervision per cut)."""

    @property
    def dataset(self) -> str:
        return self.name.rsplit("_", 1)[0] if "_" in self.name else self.name

    @property
    def split(self) -> str:
        return self.name.rsplit("_", 1)[1] if "_" in self.name else "test"

    def manifest_name(self, model: str) -> str:
        """``MODEL_<model>_DATASET_<dataset>_<split>.jsonl`` (``/`` in the model -> ``-``)."""
        return f"MODEL_{model.replace('/', '-')}_DATASET_{self.dataset}_{self.split}.jsonl"


def _checked_name(name: str, where: str) -> str:
    if not SET_NAME.match(name):
        raise ValueError(
            f"{where}: set name {name!r} must be <dataset>_<split> of letters, digits, '.' and "
            "'-' (e.g. librispeech_test.clean)"
        )
    return name


def find_sets(arguments: list[str]) -> list[TestSet]:
    """Test sets of ``name=path`` arguments and folders of recipe manifests, in order.

    Raises:
        ValueError: a missing file, a folder without recipe manifests, a bad or repeated name.
    """
    sets: list[TestSet] = []
    for argument in arguments:
        name, sep, path = argument.partition("=")
        if sep:
            if not Path(path).is_file():
                raise ValueError(f"{argument}: no such cut manifest {path!r}")
            sets.append(TestSet(_checked_name(name, argument), path))
            continue
        folder = Path(argument)
        if not folder.is_dir():
            raise ValueError(
                f"{argument}: neither a folder of <corpus>_cuts_<part>.jsonl.gz manifests nor a "
                "name=path pair"
            )
        found = []
        for path in sorted(folder.iterdir()):
            match = RECIPE_NAME.match(path.name)
            if match and path.is_file():
                name = f"{match['corpus']}_{match['part']}"
                found.append(TestSet(_checked_name(name, str(path)), str(path)))
        if not found:
            raise ValueError(f"{argument}: no <corpus>_cuts_<part>.jsonl(.gz) manifests in it")
        sets += found
    if not sets:
        raise ValueError("no test sets given (name=path pairs or folders of recipe manifests)")
    seen: dict[str, str] = {}
    for test_set in sets:
        if test_set.name in seen:
            raise ValueError(
                f"set {test_set.name!r} given twice ({seen[test_set.name]} and {test_set.cuts}); "
                "name one of them with name=path"
            )
        seen[test_set.name] = test_set.cuts
    return sets


def chunk_fields(cut) -> dict:
    """``parent_id`` and ``chunk_index`` of a chunked set's cut (from the supervision's
    ``custom``, else the cut's), or nothing."""
    custom = dict(getattr(cut, "custom", None) or {})
    custom.update(cut.supervisions[0].custom or {})
    if "parent_id" in custom and "chunk_index" in custom:
        out = {"parent_id": str(custom["parent_id"]), "chunk_index": int(custom["chunk_index"])}
        if isinstance(custom.get("parent_text"), str):
            out["parent_text"] = custom["parent_text"]
        return out
    return {}


def session_references(rows: list[dict]) -> dict[str, str]:
    """``{parent_id: the session's reference}`` of a chunked set's rows: its ``parent_text``
    when the cuts carry one; the chunks' common text when they all carry the same one (the
    leaderboard's chunked sets give every chunk its session's transcript); else the chunks'
    references joined in ``chunk_index`` order."""
    chunks: dict[str, list[dict]] = {}
    for row in rows:
        if "parent_id" in row:
            chunks.setdefault(row["parent_id"], []).append(row)
    out = {}
    for parent, group in chunks.items():
        given = [r["parent_text"] for r in group if "parent_text" in r]
        texts = {r["text"] for r in group}
        if given:
            out[parent] = given[0]
        elif len(texts) == 1 and len(group) > 1:  # every chunk already holds the session's text
            out[parent] = texts.pop()
        else:
            ordered = sorted(group, key=lambda r: r["chunk_index"])
            out[parent] = " ".join(r["text"].strip() for r in ordered if r["text"].strip())
    return out
