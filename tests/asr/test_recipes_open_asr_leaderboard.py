"""The ``open_asr_leaderboard`` recipe on tiny snapshots in the Hugging Face layout (pyarrow-built
parquet, ``audio`` structs of FLAC/WAV bytes): plain configs, the chunked Earnings-22 with its
parents, the leaderboard's set keys, skip on rerun, filtered references, a missing parent."""

import io
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.asr._tools import need

REPO = Path(__file__).resolve().parents[2]
RATE = 16000


def _audio(seconds: float, fmt: str, freq: float = 220.0) -> bytes:
    import soundfile as sf

    t = np.arange(int(round(seconds * RATE))) / RATE
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE, format=fmt)
    return buffer.getvalue()


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


# id, text, seconds, format (the first two shards of ami_cleaned/test)
AMI = [
    ("AMI_ES2011a_H00_FEE041_0003714_0003915", "Okay, so the remote control.", 0.6, "FLAC"),
    ("AMI_ES2011a_H01_FEE042_0005012_0005230", "Uh, um.", 0.4, "FLAC"),  # empty once normalised
    ("AMI_ES2011a_H02_MEE043_0007000_0007100", "We need a budget of 25 euros.", 0.9, "WAV"),
    ("AMI_ES2011a_H03_MEE044_0009000_0009100", "Yes.", 0.3, "FLAC"),
]
CHUNKS = [  # parent, chunk index, file name, seconds
    ("4432298", 0, "4432298_chunk_000.flac", 0.7),
    ("4432298", 1, "4432298_chunk_001.flac", 0.5),
    ("4450488", 0, "4450488_chunk_000.flac", 0.8),
]
PARENTS = {
    "4432298": "Good morning and welcome to the call. Thank you.",
    "4450488": "Revenue grew 12% in the quarter.",
}


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    for module in ("lhotse", "pyarrow", "soundfile"):
        need(module)
    root = tmp_path_factory.mktemp("oal")
    main = root / "open-asr-leaderboard"
    rows = [
        {"audio": {"bytes": _audio(s, f), "path": f"{i}.{f.lower()}"}, "text": t, "id": i}
        for i, t, s, f in AMI
    ]
    _parquet(main / "ami_cleaned" / "test-00000-of-00002.parquet", rows[:2])
    _parquet(main / "ami_cleaned" / "test-00001-of-00002.parquet", rows[2:])
    _parquet(
        main / "librispeech" / "test.clean-00000-of-00001.parquet",
        [{"audio": {"bytes": _audio(0.5, "FLAC"), "path": None}, "text": "HELLO WORLD", "id": "1089-134686-0000"}],
    )  # fmt: skip
    chunked = root / "earnings22-chunked"
    for _, _, name, seconds in CHUNKS:
        (chunked / "audio").mkdir(parents=True, exist_ok=True)
        (chunked / "audio" / name).write_bytes(_audio(seconds, "FLAC", 330.0))
    _parquet(
        chunked / "data" / "test-00000-of-00001.parquet",
        [{"parent_id": p, "chunk_index": c, "file_name": n} for p, c, n, _ in CHUNKS],
    )
    parents = root / "earnings22-parents"
    _parquet(
        parents / "data" / "test-00000-of-00001.parquet",
        [{"audio": {"bytes": b"", "path": f"{k}.mp3"}, "id": k, "text": v} for k, v in PARENTS.items()],
    )  # fmt: skip
    partial = root / "earnings22-parents-partial"
    _parquet(partial / "data" / "test-00000-of-00001.parquet", [{"id": "4432298", "text": "x"}])
    return {"main": main, "chunked": chunked, "parents": parents, "partial": partial}


@pytest.fixture(scope="module")
def prepared(snapshots, tmp_path_factory):
    from nemo_neko.asr.recipes.open_asr_leaderboard import prepare_open_asr_leaderboard

    out = tmp_path_factory.mktemp("oal-out")
    parts = ["ami_cleaned_test", "librispeech_test.clean", "earnings22_cleaned_aa_chunked_test"]
    options = {"chunked": str(snapshots["chunked"]), "parents": str(snapshots["parents"])}
    handler = _Capture()
    logger = logging.getLogger("nemo_neko.asr.recipes.open_asr_leaderboard")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        paths = prepare_open_asr_leaderboard(snapshots["main"], out, parts, **options)
    finally:
        logger.removeHandler(handler)
    return out, paths, parts, options, handler.messages


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_plain_config_cuts_ids_texts_durations_and_filter(prepared):
    from lhotse import CutSet

    out, paths, _, _, messages = prepared
    assert paths["ami_cleaned_test"] == out / "ami_cleaned_cuts_test.jsonl.gz"
    cuts = list(CutSet.from_file(paths["ami_cleaned_test"]))
    kept = [a for a in AMI if a[1] != "Uh, um."]
    assert [c.id for c in cuts] == [a[0] for a in kept]
    for cut, (cut_id, text, seconds, fmt) in zip(cuts, kept):
        (sup,) = cut.supervisions
        assert sup.text == text and sup.id == cut_id and sup.custom is None  # the raw reference
        assert cut.duration == pytest.approx(seconds) and cut.sampling_rate == RATE
        source = Path(cut.recording.sources[0].source)
        assert source == out / "audio" / "ami_cleaned_test" / f"{cut_id}.{fmt.lower()}"
        assert cut.load_audio().shape == (1, round(seconds * RATE))
    (filtered,) = [m for m in messages if "ami_cleaned_test" in m]
    assert "3 utterances" in filtered and "empty after normalisation: 1" in filtered
    (clean,) = CutSet.from_file(paths["librispeech_test.clean"])
    assert clean.id == "1089-134686-0000" and clean.supervisions[0].text == "HELLO WORLD"


def test_chunked_cuts_carry_parent_fields(prepared):
    from lhotse import CutSet

    from nemo_neko.eval.leaderboard.sets import chunk_fields, session_references

    _, paths, _, _, _ = prepared
    cuts = list(CutSet.from_file(paths["earnings22_cleaned_aa_chunked_test"]))
    assert [c.id for c in cuts] == [Path(n).stem for _, _, n, _ in CHUNKS]
    rows = []
    for cut, (parent, index, _, seconds) in zip(cuts, CHUNKS):
        assert cut.supervisions[0].text == PARENTS[parent]
        assert cut.duration == pytest.approx(seconds)
        fields = chunk_fields(cut)
        assert fields == {"parent_id": parent, "chunk_index": index, "parent_text": PARENTS[parent]}
        rows.append({**fields, "text": cut.supervisions[0].text})
    assert session_references(rows) == PARENTS


def test_sets_found_under_the_leaderboard_keys(prepared):
    from nemo_neko.eval.leaderboard.sets import find_sets
    from nemo_neko.eval.protocols import OAL2026_SETS

    out, _, parts, _, _ = prepared
    names = [s.name for s in find_sets([str(out)])]
    assert sorted(names) == sorted(parts) and set(names) <= set(OAL2026_SETS)


def test_rerun_skips_and_force_keeps_identical_audio(prepared, monkeypatch):
    from nemo_neko.asr.recipes import open_asr_leaderboard as recipe

    out, paths, parts, options, _ = prepared
    stamps = {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.*")}

    def unread(*args, **kwargs):
        raise AssertionError("a complete set's snapshot was read again")

    with monkeypatch.context() as patch:
        patch.setattr(recipe, "split_files", unread)
        assert recipe.prepare_open_asr_leaderboard("/nonexistent", out, parts, **options) == paths
    recipe.prepare_open_asr_leaderboard(
        out.parent / "missing", out, ["earnings22_cleaned_aa_chunked_test"], force=True, **options
    )
    assert {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.*")} == stamps


def test_missing_parent_is_refused_in_one_line(snapshots, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "data_prep" / "prepare_asr_corpus.py"),
            "prepare",
            "open_asr_leaderboard",
            str(snapshots["main"]),
            str(out),
            "--parts",
            "earnings22_cleaned_aa_chunked_test",
            "--option",
            f"chunked={snapshots['chunked']}",
            "--option",
            f"parents={snapshots['partial']}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "WARNING" not in line]
    errors = [line for line in errors if " INFO " not in line]
    assert errors == [
        f"open_asr_leaderboard: {snapshots['partial']}: no transcript for parent id(s) 4450488 of "
        f"{snapshots['chunked']} (the chunked and parent snapshots are out of sync: "
        "ArtificialAnalysis/Earnings22-Cleaned-AA-chunked needs ArtificialAnalysis/Earnings22-Cleaned-AA)"
    ]
    assert not list(out.glob("*.jsonl.gz")) and not (out / "audio").exists()


def test_split_files_follow_the_dataset_card(tmp_path):
    need("pyarrow")
    from nemo_neko.asr.recipes._common import RecipeInputError
    from nemo_neko.asr.recipes.open_asr_leaderboard import split_files

    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: librispeech\n  data_files:\n  - split: test.clean\n"
        "    path: shards/ls/clean-*\n---\n# card\n"
    )
    _parquet(tmp_path / "shards" / "ls" / "clean-00000-of-00001.parquet", [{"id": "a"}])
    _parquet(tmp_path / "spgispeech" / "test" / "0000.parquet", [{"id": "b"}])  # parquet bot
    assert split_files(tmp_path, "librispeech", "test.clean") == [
        tmp_path / "shards" / "ls" / "clean-00000-of-00001.parquet"
    ]
    assert split_files(tmp_path, "spgispeech", "test") == [
        tmp_path / "spgispeech" / "test" / "0000.parquet"
    ]
    with pytest.raises(RecipeInputError, match="no table files for config 'ami_cleaned'"):
        split_files(tmp_path, "ami_cleaned", "test")
