"""The experiment runner on a micro model, through the real launcher: every arm kind runs as an
ordinary run, a rerun skips what is done, a changed or unfinished arm runs again."""

import json
import subprocess
import sys

import pytest

from nemo_neko.experiment.runner import DONE_FILE, measure_affinity
from nemo_neko.testing.runs import MICRO_OVERRIDES, write_micro_data

pytestmark = pytest.mark.slow

ARMS = (
    "experiment.arms=[{name: dense, kind: dense}, {name: moe, kind: moe}, {name: neko, kind: neko},"
    " {name: learned, kind: neko_learned}, {name: btx, kind: btx}]"
)


def _launch(tmp_path, arms=ARMS):
    data = tmp_path / "data"
    if not data.exists():  # written once: rewritten files are new data (a new tokenizer...)
        (tmp_path / "data.txt").write_text(
            "\n".join(write_micro_data(data, ("atis", "td3", "cv"), 48, 4))
        )
    data = (tmp_path / "data.txt").read_text().splitlines()
    command = [sys.executable, "-m", "nemo_neko.launch", *MICRO_OVERRIDES, *data,
               "model.moe_ffn_hidden_size=128", "train.max_steps=6",
               "generate.max_records_per_dataset=4", "generate.max_new_tokens=8",
               "experiment.name=t", f"experiment.dir={tmp_path / 'exp'}",
               "experiment.held_out=[cv]", "experiment.warmup_steps=2", arms]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_arms_run_compare_and_resume_arm_by_arm(tmp_path):
    out = _launch(tmp_path)
    exp = tmp_path / "exp"
    doc = json.loads((exp / "comparison.json").read_text())
    assert [a["name"] for a in doc["arms"]] == ["dense", "moe", "neko", "learned", "btx"]
    assert all("scores" in a and a["seconds"] > 0 for a in doc["arms"])
    assert [(d["dataset"], d["split"]) for d in doc["datasets"]] == [
        ("atis", "in-domain"), ("td3", "in-domain"), ("cv", "zero-shot")]  # fmt: skip
    assert [m["dataset"] for m in doc["means"]] == [
        "mean in-domain (2)", "mean zero-shot (1)", "mean all (3)"]  # fmt: skip
    for arm in doc["arms"][1:]:  # every MoE arm: its routing, cv among the zero-shot sets
        assert arm["routing"]["zero_shot"] == ["cv"] and arm["inference_shares"]["datasets"]
        assert arm["training_shares"]["datasets"] == ["atis", "td3"]
    for name in ("comparison.md", "comparison.png", "comparison.routing.png"):
        assert (exp / name).stat().st_size > 0
    # the learned assignment is the solver's on the warm-up's measured affinity
    affinity = json.loads((exp / "learned.warmup" / "affinity.json").read_text())
    assert affinity["datasets"] == ["atis", "td3"] and affinity["measured"]["steps_logged"] == 2
    merged = json.loads((exp / "btx.merged" / "merge.json").read_text())
    assert merged["expert_branch"] == [0, 1] * 4
    assert "btx: merging 2 branches" in out and "router affinity of 2 datasets" in out

    # a rerun redoes nothing; an arm that did not finish, and one whose config changed, run again
    stamps = {p: p.stat().st_mtime_ns for p in exp.rglob(DONE_FILE)}
    (exp / "moe" / DONE_FILE).unlink()
    changed = ARMS.replace("kind: neko}", "kind: neko, overrides: ['generate.max_new_tokens=6']}")
    out = _launch(tmp_path, changed)
    assert "experiment: moe/run -> " in out and "experiment: neko/run -> " in out
    for sub in ("dense/run", "learned/warmup", "learned/run", "btx/branch0", "btx/run"):
        assert f"experiment: {sub} done before" in out
    assert "experiment: " + str(exp / "neko") + " holds the results of another config" in out
    assert (exp / "neko.stale-1" / DONE_FILE).exists()  # moved aside, not overwritten
    for path, stamp in stamps.items():
        if path.parent.name not in ("moe", "neko"):
            assert path.stat().st_mtime_ns == stamp
    out = _launch(tmp_path, changed)
    assert out.count("done before") == 8 and "comparison -> " in out


def test_the_affinity_is_each_datasets_gate_choices_over_the_logged_steps(tmp_path):
    from nemo_neko.config import save_run_config
    from nemo_neko.testing.runs import compose_run

    save_run_config(compose_run(tmp_path, ["model.num_experts=4"]), tmp_path / "config.yaml")
    lines = [  # two logged steps; each counts the steps since the previous log
        {"step": 1, "kind": "train", **{f"routing/atis/expert{e}": v for e, v in enumerate([3, 1, 0, 0])},
         **{f"routing/td3/expert{e}": v for e, v in enumerate([0, 0, 2, 2])}},
        {"step": 2, "kind": "eval", "loss": 1.0},
        {"step": 3, "kind": "train", **{f"routing/atis/expert{e}": v for e, v in enumerate([1, 3, 0, 0])},
         **{f"routing/td3/expert{e}": v for e, v in enumerate([0, 0, 0, 4])}},
    ]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    document = json.loads(measure_affinity(tmp_path, log=lambda _: None).read_text())
    assert document["datasets"] == ["atis", "td3"] and document["experts"] == 4
    assert document["affinity"] == [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]]
    assert document["measured"]["steps_logged"] == 2
