"""``python -m nemo_neko.eval leaderboard`` end to end on CPU: espeak-ng speech in LibriSpeech's
layout -> lhotse cut manifests (plus a chunked set) -> PocketSphinx first pass and 5-best ->
records -> a tiny trained NeKo run corrects them -> leaderboard manifests of both systems ->
oal2026 scores side by side. Then: a rerun does nothing again, a torn stage resumes, the first
pass taken from existing result manifests (matched by id and in order), and bad input."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.runs import train_run, write_micro_run
from tests.asr._tools import need

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A micro NeKo run trained for 2 steps."""
    run_dir = tmp_path_factory.mktemp("lb_run") / "run"
    config = write_micro_run(run_dir, ["train.max_steps=2", "generate.max_new_tokens=12"])
    run_distributed(train_run, 1, str(config))
    return run_dir


def _chunked(manifest: Path, out: Path, count: int = 4) -> Path:
    """The manifest's first ``count`` cuts as chunks of sessions of two (``parent_id``,
    ``chunk_index``)."""
    lines = []
    with gzip.open(manifest, "rt") as fh:
        for i, line in zip(range(count), fh):
            cut = json.loads(line)
            custom = cut["supervisions"][0].setdefault("custom", {}) or {}
            custom.update(parent_id=f"session-{i // 2}", chunk_index=i % 2)
            cut["supervisions"][0]["custom"] = custom
            lines.append(json.dumps(cut))
    with gzip.open(out, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def sets(manifests, tmp_path_factory):
    need("pocketsphinx")
    chunked = _chunked(
        manifests["train-clean-100"], tmp_path_factory.mktemp("e22") / "e22.jsonl.gz"
    )
    return [
        f"librispeech_test.clean={manifests['test-clean']}",
        f"earnings22-chunked_test={chunked}",
    ]


def leaderboard(run_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "nemo_neko.eval", "leaderboard", "--run-dir", str(run_dir), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


POCKETSPHINX = ["--first-pass", "pocketsphinx", "--nbest-backend", "pocketsphinx"]


@pytest.fixture(scope="module")
def evaluated(trained, sets):
    done = leaderboard(trained, "--sets", *sets, *POCKETSPHINX, "--n", "5", "--batch-size", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    return trained / "leaderboard", done


def test_the_whole_leaderboard_path_writes_manifests_and_scores_of_both_systems(evaluated, trained):
    out, done = evaluated
    assert "Open ASR Leaderboard (oal2026): pocketsphinx vs pocketsphinx+neko-tiny" in done.stdout
    assert "first pass librispeech_test.clean" in done.stderr and "RTFx" in done.stderr
    predictions = {p["id"]: p for p in rows(out / "corrected" / "predictions.jsonl")}
    manifests = sorted(p.name for p in (out / "manifests").iterdir())
    assert manifests == [
        "MODEL_pocketsphinx+neko-tiny_DATASET_earnings22-chunked_test.jsonl",
        "MODEL_pocketsphinx+neko-tiny_DATASET_librispeech_test.clean.jsonl",
        "MODEL_pocketsphinx_DATASET_earnings22-chunked_test.jsonl",
        "MODEL_pocketsphinx_DATASET_librispeech_test.clean.jsonl",
    ]
    for name, count in (("librispeech_test.clean", 2), ("earnings22-chunked_test", 4)):
        first_pass = {r["id"]: r for r in rows(out / "first_pass" / f"{name}.jsonl")}
        nbest = {r["id"]: r for r in rows(out / "nbest" / f"{name}.jsonl")}
        first = rows(out / "manifests" / f"MODEL_pocketsphinx_DATASET_{name}.jsonl")
        fixed = rows(out / "manifests" / f"MODEL_pocketsphinx+neko-tiny_DATASET_{name}.jsonl")
        assert len(first) == len(fixed) == count
        for a, b in zip(first, fixed):
            cut = a["audio_filepath"]
            assert b["audio_filepath"] == cut and a["text"] == b["text"]
            if name.startswith("librispeech"):
                assert a["text"] == first_pass[cut]["text"]
            else:  # each chunk row: its session's reference, the chunks' joined in order
                session = [r for r in first_pass.values() if r["parent_id"] == a["parent_id"]]
                session.sort(key=lambda r: r["chunk_index"])
                assert a["text"] == " ".join(r["text"] for r in session)
            assert a["pred_text"] == first_pass[cut]["hypotheses"][0]
            assert b["pred_text"] == predictions[cut]["prediction"]
            assert a["duration"] == b["duration"] > 0
            spent = a["time"] + nbest[cut]["time"] + predictions[cut]["time"]
            assert b["time"] == pytest.approx(spent) and b["time"] > a["time"] > 0
            if name.startswith("earnings22"):
                assert a["parent_id"] == b["parent_id"] and "chunk_index" in a
        assert all(len(r["hypotheses"]) == 5 for r in nbest.values())

    # the table equals `score` run by hand on the manifests it wrote
    scored = out / "scored.json"
    by_hand = subprocess.run(
        [sys.executable, "-m", "nemo_neko.eval", "score", str(out / "manifests"), "--protocol",
         "oal2026", "--json", str(scored)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert by_hand.returncode == 0, by_hand.stderr
    expected = {(d["model"], d["dataset"]): d for d in json.loads(scored.read_text())["datasets"]}
    table = json.loads((out / "leaderboard.json").read_text())
    assert [d["dataset"] for d in table["datasets"]] == [
        "librispeech_test.clean",
        "earnings22-chunked_test",
    ]
    for d in table["datasets"]:
        first = expected[("pocketsphinx", d["dataset"])]
        fixed = expected[("pocketsphinx+neko-tiny", d["dataset"])]
        assert (d["first_pass_wer"], d["corrected_wer"]) == (first["wer"], fixed["wer"])
        assert d["first_pass_rtfx"] == first["rtfx"] and d["corrected_rtfx"] == fixed["rtfx"]
        if first["wer"]:
            change = round(100 * (fixed["wer"] - first["wer"]) / first["wer"], 2)
            assert d["relative_change"] == change
    assert table["datasets"][1]["utterances"] == 2  # four chunks joined into two sessions
    composite = table["composite"]
    mean = round(sum(d["first_pass_wer"] for d in table["datasets"]) / 2, 2)
    assert composite["first_pass_wer"] == mean and composite["datasets"] == 2
    markdown = (out / "leaderboard.md").read_text()
    assert "| composite (2 sets) |" in markdown and "session" in markdown
    assert (
        "covers 1 of the leaderboard's 7 public oal2026 sets (missing: ami_cleaned_test,"
        in markdown
    )
    assert (out / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "leaderboard.json").read_text())["run"]["checkpoint"]


def test_a_rerun_does_nothing_and_a_torn_stage_redoes_only_what_is_missing(evaluated, sets):
    out, _ = evaluated
    before = (out / "leaderboard.json").read_text()
    again = leaderboard(out.parent, "--sets", *sets, *POCKETSPHINX, "--n", "5", "--batch-size", "4")
    assert again.returncode == 0, again.stderr
    assert (
        "first pass" not in again.stderr and "correcting 0 records (6 already done)" in again.stdout
    )
    assert (out / "leaderboard.json").read_text() == before

    # a kill in the middle of the N-best stage: its last row torn, the job not marked complete
    nbest = out / "nbest" / "earnings22-chunked_test.jsonl"
    kept = nbest.read_text().splitlines()
    nbest.write_text("\n".join(kept[:-2]) + "\n" + kept[-2][:20])
    job = nbest.with_name("earnings22-chunked_test.job.json")
    stamp = json.loads(job.read_text())
    job.write_text(json.dumps({**stamp, "complete": False}))
    again = leaderboard(out.parent, "--sets", *sets, *POCKETSPHINX, "--n", "5", "--batch-size", "4")
    assert again.returncode == 0, again.stderr
    assert "5-best earnings22-chunked_test: 4/4" in again.stderr
    assert "dropping a torn last line" in again.stderr
    assert sorted(r["id"] for r in rows(nbest)) == sorted(json.loads(k)["id"] for k in kept)
    assert json.loads(job.read_text())["complete"]


def test_the_first_pass_can_be_another_models_result_manifests(evaluated, sets, tmp_path):
    out, _ = evaluated
    given = tmp_path / "whisper"
    given.mkdir()
    for path in (out / "manifests").glob("MODEL_pocketsphinx_DATASET_*.jsonl"):
        name = path.name.replace("MODEL_pocketsphinx_DATASET_", "MODEL_x-whisper_DATASET_hf-lb_")
        lines = rows(path)
        if "librispeech" in path.name:  # the leaderboard's own files name rows sample_<i>
            lines = [{**r, "audio_filepath": f"sample_{i}"} for i, r in enumerate(lines)]
        (given / name).write_text("".join(json.dumps(r) + "\n" for r in lines))
    shutil.copytree(out / "nbest", tmp_path / "lb" / "nbest")  # the same N-best job: reused
    config = out.parent / "config.yaml"
    saved = config.read_text()
    run = OmegaConf.load(config)
    run.generate.nproc = 2  # correction on two data-parallel ranks (torchrun, gloo)
    config.write_text(OmegaConf.to_yaml(run))
    try:
        done = leaderboard(
            out.parent, "--sets", *sets, "--first-pass", str(given), "--nbest-backend",
            "pocketsphinx", "--batch-size", "4", "--out", str(tmp_path / "lb"),
        )  # fmt: skip
    finally:
        config.write_text(saved)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "x-whisper vs x-whisper+neko-tiny" in done.stdout and "5-best" not in done.stderr
    assert "correcting with 2 ranks" in done.stdout
    # the same records (same first pass and N-best): two ranks predict what one process did
    two = rows(tmp_path / "lb" / "corrected" / "predictions.jsonl")
    one = rows(out / "corrected" / "predictions.jsonl")
    assert [(p["id"], p["prediction"]) for p in two] == [(p["id"], p["prediction"]) for p in one]
    mine = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    theirs = json.loads((out / "leaderboard.json").read_text())
    assert [d["first_pass_wer"] for d in mine["datasets"]] == [
        d["first_pass_wer"] for d in theirs["datasets"]
    ]

    # one set's manifest missing: one line naming the folder and the set, before any work
    (given / "MODEL_x-whisper_DATASET_hf-lb_librispeech_test.clean.jsonl").unlink()
    done = leaderboard(
        out.parent, "--sets", *sets, "--first-pass", str(given), "--out", str(tmp_path / "lb2")
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        f"error: {given}: 0 result manifests for set 'librispeech_test.clean'"
    )
    assert not (tmp_path / "lb2").exists()


def test_bad_sets_and_backends_are_one_line_before_any_work(trained, sets, tmp_path):
    broken = tmp_path / "broken_cuts_test.jsonl"
    broken.write_text('{"id": "a", "start": 0}\n')
    good = sets[0]
    for args, message in (
        (["--sets", f"a_test={tmp_path / 'none.jsonl.gz'}"], "a_test="),
        (["--sets", str(tmp_path / "empty")], "neither a folder"),
        (["--sets", f"bad name={__file__}"], "must be <dataset>_<split>"),
        (["--sets", good, str(tmp_path)], f"{broken}:1: "),
        (["--sets", good, "--first-pass", "whisperx"], "neither a backend"),
        (["--sets", good, "--nbest-backend", "x"], "unknown N-best backend"),
        ([], "no test sets: give --sets"),
    ):
        done = leaderboard(trained, *args, "--out", str(tmp_path / "lb"))
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "lb").exists()
