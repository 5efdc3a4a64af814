"""Each arm's sub-runs derived from the composed config (pure; nothing trains)."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_neko.config import to_run_config
from nemo_neko.experiment.arms import btx_groups, experiment_base, plan_arm
from nemo_neko.experiment.config import ArmConfig, ArmKind, ExperimentConfig, btx_steps
from nemo_neko.experiment.runner import plan_experiment
from nemo_neko.testing.runs import compose_run

ARMS = (
    "experiment.arms=[{name: dense, kind: dense}, {name: moe, kind: moe}, {name: neko, kind: neko},"
    " {name: learned, kind: neko_learned, overrides: ['train.lr=5e-4']}, {name: btx, kind: btx}]"
)


def _compose(tmp_path, *more):
    cfg = compose_run(
        tmp_path / "run",
        [
            "train.max_steps=20",
            "experiment.name=t",
            f"experiment.dir={tmp_path / 'exp'}",
            "experiment.held_out=[td3]",
            "experiment.warmup_steps=4",
            ARMS,
            *more,
        ],
        data_root=tmp_path / "data",
    )
    run = to_run_config(cfg)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), run


def test_every_kind_becomes_ordinary_runs_on_the_same_data_budget_and_seed(tmp_path):
    container, run = _compose(tmp_path, "experiment.btx_groups=1")
    plans = dict((arm.name, subs) for arm, subs in plan_experiment(container, run.experiment))
    root = tmp_path / "exp"
    runs = {name: to_run_config(subs[-1].config) for name, subs in plans.items()}
    for name, sub_run in runs.items():  # the scored run of every arm
        assert Path(sub_run.run_dir) == root / name
        assert [s.name for s in sub_run.data.train] == ["atis"]  # td3 held out of training
        assert [s.name for s in sub_run.data.test] == ["atis", "td3"]  # and scored zero-shot
        assert sub_run.seed == run.seed and not sub_run.experiment.arms
    assert runs["dense"].model.num_experts == 0 and runs["dense"].model.name == "tiny-dense"
    assert not runs["moe"].routing.forcing and runs["neko"].routing.forcing
    assert runs["neko"].model == run.model and runs["neko"].train.max_steps == 20
    warmup, learned = plans["learned"]
    assert warmup.role == "warmup" and warmup.config["stages"] == ["prepare", "train"]
    assert warmup.config["train"]["max_steps"] == 4 and not warmup.config["routing"]["forcing"]
    assert warmup.config["train"]["lr"] == 5e-4  # the arm's overrides reach every sub-run
    assert runs["learned"].train.max_steps == 16  # the warm-up is part of the budget
    assert runs["learned"].train.init_from == str(root / "learned.warmup" / "checkpoints")
    assert [str(p) for p in learned.inputs] == [
        str(root / "learned.warmup" / n) for n in ("experiment_done.json", "affinity.json")]  # fmt: skip
    assert warmup.config["name"] == "t-learned-warmup" and learned.config["name"] == "t-learned"
    assert runs["learned"].routing.assignment.affinity.endswith("warmup/affinity.json")
    branch, mix = plans["btx"]
    assert branch.datasets == ["atis"] and branch.config["model"]["num_experts"] == 0
    assert branch.config["train"]["max_steps"] + runs["btx"].train.max_steps == 20
    assert runs["btx"].train.init_from == str(root / "btx.merged")
    assert branch.run_dir == root / "btx.branch0" and mix.inputs == [
        root / "btx.merged" / "merge.json"
    ]
    assert not runs["btx"].routing.forcing


def test_btx_branches_deal_datasets_and_split_the_steps():
    assert btx_groups(["a", "b", "c", "d", "e"], 2) == [["a", "c", "e"], ["b", "d"]]
    assert btx_steps(48, 2, 0.75) == (18, 12)
    assert btx_steps(10, 3, 0.5) == (1, 7)


def test_experiment_base_empties_the_experiment_and_drops_held_out_training_sets():
    container = {
        "experiment": {"held_out": ["b"]},
        "hydra": {},
        "dry_run": True,
        "data": {"train": [{"name": "a"}, {"name": "b"}], "test": [{"name": "b"}]},
    }
    base = experiment_base(container)
    assert base == {
        "experiment": {},
        "dry_run": False,
        "data": {"train": [{"name": "a"}], "test": [{"name": "b"}]},
    }
    assert container["experiment"] == {"held_out": ["b"]}  # the input is left as it was
    arm = plan_arm(base | {"train": {}}, ArmConfig("x", ArmKind.moe, ["train.lr=1"]),
                   ExperimentConfig(name="e"), Path("/r"))  # fmt: skip
    assert arm[0].config["train"]["lr"] == 1 and arm[0].config["routing"]["forcing"] is False


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (["experiment.held_out=[nope]"], "'nope' is not a training dataset"),
        (["experiment.held_out=[atis, td3]"], "every training dataset is held out"),
        (["experiment.arms=[{name: a}, {name: a}]"], "arm names repeated: ['a']"),
        (["experiment.arms=[{name: 'a/b'}]"], "is not a folder name"),
        (["experiment.arms=[{name: a, overrides: [lr]}]"], "'lr' is not key=value"),
        (["experiment.arms=[{name: a, kind: moe, overrides: ['routing.forcing=true']}]"],
         "routing.forcing is set by the arm's kind (moe)"),  # fmt: skip
        (["experiment.arms=[{name: a, kind: dense, overrides: ['model.num_experts=2']}]"],
         "model.num_experts is set by the arm's kind (dense)"),  # fmt: skip
        (["experiment.arms=[{name: a, overrides: ['run_dir=/x']}]"], "run_dir is set by the arm"),
        (["train.max_steps=null"], "split the budget: set train.max_steps"),
        (["experiment.warmup_steps=20"], "warmup_steps=20 must be in [1, train.max_steps)"),
        (["experiment.btx_groups=3"], "btx_groups=3 must be in [1, 1]"),
        (["experiment.held_out=[]", "experiment.btx_groups=2", "model.num_experts=1",
          "model.moe_router_topk=1"], "btx_groups=2 must be in [1, 1]"),  # fmt: skip
        (["experiment.btx_branch_share=1.0"], "btx_branch_share=1.0 must be in (0, 1)"),
        (["train.max_steps=5", "experiment.btx_groups=1", "experiment.btx_branch_share=0.1"],
         "leaves btx 0 steps per branch"),  # fmt: skip
    ],
)
def test_a_broken_experiment_is_one_line_before_anything_runs(tmp_path, overrides, problem):
    with pytest.raises(ValueError) as err:
        _compose(tmp_path, "experiment.btx_groups=1", *overrides)
    assert problem in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "experiment, model, sub_runs",
    [("paper_cpu", "smollm2", 8), ("paper", "8x2b", 10), ("paper_moe", "8x7b", 4),
     ("paper_moe", "8x22b", 4), ("paper_moe", "qwen_moe", 4)],  # fmt: skip
)
def test_the_shipped_experiments_plan_every_arm(experiment, model, sub_runs):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "nemo_neko.launch", f"experiment={experiment}", f"model={model}",
         "dry_run=true", "train.max_steps=1000"],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [x for x in done.stdout.splitlines() if x.startswith("arm ")]
    assert len(lines) == sub_runs and all("steps" in x for x in lines)


def test_dense_arms_cannot_start_from_an_moe_checkpoint(tmp_path):
    container, run = _compose(tmp_path, "experiment.btx_groups=1")
    container["train"]["init_from"] = str(tmp_path / "moe_checkpoint")
    with pytest.raises(ValueError, match=r"arms \['btx', 'dense'\] fine-tune a dense model"):
        plan_experiment(container, run.experiment)
