"""Each arm of an experiment as ordinary run configs: pure functions of the composed config.

An arm is one or more *sub-runs*, each an ordinary run directory with its own ``config.yaml``,
side by side in ``experiment.dir``:

* ``dense``, ``moe``, ``neko``: one run, ``<arm>``;
* ``neko_learned``: ``<arm>.warmup`` (a ``moe`` run of ``experiment.warmup_steps`` steps, prepare
  and train only), whose gate choices per dataset become ``<arm>.warmup/affinity.json``, then
  the scored run ``<arm>`` (``routing.assignment.mode=learned`` on that file, initialised with the
  warm-up's weights, for the rest of ``train.max_steps``; fresh optimizer and schedule);
* ``btx``: ``<arm>.branch<g>`` (dense, trained on branch ``g``'s datasets for its share of the
  steps), the merged MoE checkpoint ``<arm>.merged`` (:mod:`.btx`), then the scored run
  ``<arm>`` (plain top-k routing, from the merged checkpoint, for the remaining steps).

Every sub-run starts from the experiment's config with ``experiment`` emptied, the held-out
datasets removed from ``data.train`` (their test sets stay: scored zero-shot), the arm's
``overrides``, then what its kind and role set (the keys of
:data:`~nemo_neko.experiment.config.KIND_KEYS`, which an arm's overrides may not name). Configs are plain containers (dicts), checked with
:func:`nemo_neko.config.to_run_config` by the runner.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

from nemo_neko.experiment.config import ArmConfig, ArmKind, ExperimentConfig, btx_steps

AFFINITY_FILE = "affinity.json"
"""The warm-up's measured affinity, in the warm-up's run directory."""
DONE_FILE = "experiment_done.json"
"""In a sub-run's directory once its stages finished: ``{fingerprint, seconds, role, arm}``."""
MERGED_DIR = "merged"
"""The ``btx`` arm's merged checkpoint, in the arm's directory."""


@dataclass
class SubRun:
    """One ordinary run of an arm."""

    role: str
    """``run`` (the arm's scored run), ``warmup`` or ``branch<g>``."""
    run_dir: Path
    config: dict
    """The run's whole config (plain container, resolved)."""
    datasets: list[str] | None = None
    """``branch<g>``: the training datasets of the branch."""
    inputs: list[Path] = field(default_factory=list)
    """Files made by earlier sub-runs that this one starts from (their content is part of its
    fingerprint): the warm-up's done marker and affinity, the merge's record."""


def experiment_base(container: dict) -> dict:
    """The config every sub-run starts from: ``experiment`` emptied, held-out datasets removed
    from ``data.train``, Hydra's own key dropped."""
    base = copy.deepcopy(container)
    held_out = set((base.get("experiment") or {}).get("held_out") or [])
    base.pop("hydra", None)
    base["experiment"] = {}
    base["data"]["train"] = [s for s in base["data"]["train"] if s["name"] not in held_out]
    base["dry_run"] = False
    return base


def set_key(config: dict, dotted: str, value) -> None:
    """``config[a][b][c] = value`` for ``dotted == "a.b.c"`` (missing levels created)."""
    *parents, leaf = dotted.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """``config`` with dotted ``key=value`` overrides (values parsed as YAML, as on Hydra's
    command line) applied."""
    from omegaconf import OmegaConf

    if not overrides:
        return config
    merged = OmegaConf.merge(OmegaConf.create(config), OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_container(merged, resolve=True)


def _dense(config: dict) -> dict:
    config = copy.deepcopy(config)
    set_key(config, "model.num_experts", 0)
    set_key(config, "model.moe_layers", None)
    set_key(config, "model.parallel.expert", 1)  # no experts to spread
    set_key(config, "model.parallel.expert_tensor", None)
    set_key(config, "model.name", re.sub(r"-\d+x$", "", config["model"]["name"]) + "-dense")
    return config


def _plain_topk(config: dict) -> dict:
    config = copy.deepcopy(config)
    set_key(config, "routing.forcing", False)
    return config


def _only(config: dict, stages: list[str], steps: int, run_dir: Path) -> dict:
    """A preparatory sub-run: ``stages`` only, ``steps`` steps, one checkpoint at the end."""
    config = copy.deepcopy(config)
    config["stages"] = list(stages)
    set_key(config, "train.max_steps", steps)
    set_key(config, "train.save_interval", steps)
    set_key(config, "train.eval_interval", 0)
    config["run_dir"] = str(run_dir)
    return config


def btx_groups(datasets: list[str], groups: int) -> list[list[str]]:
    """Branch ``g``'s datasets: training dataset ``i`` goes to branch ``i mod groups``."""
    return [datasets[g::groups] for g in range(groups)]


def _named(config: dict, experiment: ExperimentConfig, arm: ArmConfig, role: str) -> dict:
    config["name"] = f"{experiment.name}-{arm.name}" + ("" if role == "run" else f"-{role}")
    return config


def plan_arm(base: dict, arm: ArmConfig, experiment: ExperimentConfig, root: Path) -> list[SubRun]:
    """The sub-runs of ``arm`` in the order they run (the scored run last)."""
    arm_dir = root / arm.name
    config = apply_overrides(copy.deepcopy(base), list(arm.overrides))
    config["run_dir"] = str(arm_dir)
    _named(config, experiment, arm, "run")
    kind = ArmKind(arm.kind)
    if kind is ArmKind.dense:
        return [SubRun("run", arm_dir, _dense(config))]
    if kind is ArmKind.moe:
        return [SubRun("run", arm_dir, _plain_topk(config))]
    if kind is ArmKind.neko:
        return [SubRun("run", arm_dir, config)]
    max_steps = config["train"]["max_steps"]
    if kind is ArmKind.neko_learned:
        warm_dir = root / f"{arm.name}.warmup"
        warmup = _only(_plain_topk(config), ["prepare", "train"], experiment.warmup_steps, warm_dir)
        learned = copy.deepcopy(config)
        set_key(learned, "routing.assignment.mode", "learned")
        set_key(learned, "routing.assignment.affinity", str(warm_dir / AFFINITY_FILE))
        set_key(learned, "train.init_from", str(warm_dir / "checkpoints"))
        set_key(learned, "train.max_steps", max_steps - experiment.warmup_steps)
        return [
            SubRun("warmup", warm_dir, _named(warmup, experiment, arm, "warmup")),
            SubRun(
                "run", arm_dir, learned, inputs=[warm_dir / DONE_FILE, warm_dir / AFFINITY_FILE]
            ),
        ]
    if kind is ArmKind.btx:
        branch_steps, mix_steps = btx_steps(
            max_steps, experiment.btx_groups, experiment.btx_branch_share
        )
        names = [s["name"] for s in config["data"]["train"]]
        subs = []
        for g, group in enumerate(btx_groups(names, experiment.btx_groups)):
            role = f"branch{g}"
            branch_dir = root / f"{arm.name}.{role}"
            branch = _only(_dense(config), ["prepare", "train"], branch_steps, branch_dir)
            branch["data"]["train"] = [s for s in config["data"]["train"] if s["name"] in group]
            subs.append(SubRun(role, branch_dir, _named(branch, experiment, arm, role), group))
        merged = merged_dir(root, arm)
        mix = _plain_topk(config)
        set_key(mix, "train.init_from", str(merged))
        set_key(mix, "train.max_steps", mix_steps)
        return [*subs, SubRun("run", arm_dir, mix, inputs=[merged / "merge.json"])]
    raise ValueError(f"unknown arm kind {arm.kind!r}")  # pragma: no cover - the enum is closed


def merged_dir(root: Path, arm: ArmConfig) -> Path:
    """Where a ``btx`` arm's merged checkpoint is written."""
    return root / f"{arm.name}.{MERGED_DIR}"
