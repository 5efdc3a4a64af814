"""Run an experiment's arms one after another, each an ordinary run, then compare them.

``python launch/run.py experiment=paper_cpu`` composes the run config as usual; the launcher sees
``experiment.arms`` and calls :func:`run_experiment`, which:

1. plans every arm's sub-runs (:mod:`.arms`) and checks each config (schema, training layout
   against the cluster) before anything runs: one line naming the arm and the broken rule;
2. without a base model or a tokenizer, trains one BPE tokenizer for all arms
   (``<experiment.dir>/tokenizer``; :mod:`.steps`): every arm must read the same tokens;
3. runs each sub-run with the cluster's runner (``cluster=local``: the stages in place, training
   under torchrun), as ``launch/run.py`` would run it alone. Its fingerprint (its config and the
   content of the files it starts from) goes into ``experiment_started.json`` before it starts and
   ``experiment_done.json`` (with its wall time and the steps it trained) when it finished. A
   rerun skips a done sub-run with the same fingerprint, resumes an interrupted one (the
   launcher's own resume from its checkpoints), and moves a sub-run whose fingerprint changed
   aside (``<dir>.stale-<n>``) to run it afresh: no result of another config is ever kept.
   Between sub-runs it measures the ``neko_learned`` warm-up's affinity and merges the ``btx``
   branches (:mod:`.steps`);
4. writes ``comparison.{json,md,png}`` (:mod:`.compare`) in ``<experiment.dir>``.

Exit status as the launcher's: 0, 75 when a signal stopped a sub-run (rerun to resume).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from nemo_neko.experiment.arms import (
    DONE_FILE,
    SubRun,
    experiment_base,
    merged_dir,
    plan_arm,
)
from nemo_neko.experiment.config import ArmKind, ExperimentConfig
from nemo_neko.experiment.steps import measure_affinity, merge_step, shared_tokenizer, stale_name
from nemo_neko.utils.files import write_json_atomic
from nemo_neko.utils.progress import format_duration

STARTED_FILE = "experiment_started.json"
"""In a sub-run's directory from its start: ``{fingerprint}`` (what the files there belong to)."""


def fingerprint(sub: SubRun) -> str:
    """What identifies a sub-run's work: its whole config and the content of its inputs."""
    inputs = [p.read_text() if p.is_file() else None for p in sub.inputs]
    document = json.dumps([sub.config, inputs], sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


def _marker(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def done_record(sub: SubRun) -> dict | None:
    """The sub-run's done marker when it matches its current fingerprint, else None."""
    record = _marker(sub.run_dir / DONE_FILE)
    return record if record and record.get("fingerprint") == fingerprint(sub) else None


def set_aside_if_stale(sub: SubRun, log=print) -> None:
    """Move ``sub.run_dir`` aside when what is there belongs to another fingerprint (or to no
    experiment sub-run at all): the sub-run then starts afresh."""
    root = sub.run_dir
    if not root.exists() or not any(root.iterdir()):
        return
    marker = _marker(root / STARTED_FILE) or _marker(root / DONE_FILE) or {}
    if marker.get("fingerprint") == fingerprint(sub):
        return  # the same work, interrupted: the launcher resumes it
    aside = stale_name(root)
    os.replace(root, aside)
    log(f"experiment: {root} holds the results of another config: moved to {aside}")


def trained_steps(run_dir: Path) -> int | None:
    """The last training step in ``<run_dir>/metrics.jsonl`` (None: no training logged)."""
    from nemo_neko.utils.jsonl import iter_json_lines

    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    steps = [
        line.value["step"]
        for line in iter_json_lines(path)
        if line.value and line.value.get("kind") == "train"
    ]
    return max(steps) if steps else None


def plan_experiment(container: dict, experiment: ExperimentConfig) -> list[tuple]:
    """``[(arm, [SubRun])]`` of every arm; each config checked against the schema."""
    from nemo_neko.config import to_run_config

    base = experiment_base(container)
    dense_kinds = sorted(a.name for a in experiment.arms if a.kind in (ArmKind.dense, ArmKind.btx))
    init = (base.get("train") or {}).get("init_from")
    if dense_kinds and init:
        raise ValueError(
            f"experiment {experiment.name}: arms {dense_kinds} fine-tune a dense model, which "
            f"train.init_from={init} (an MoE checkpoint) cannot start: give the dense base as "
            f"base.source (upcycled for the MoE arms), or drop them (experiment=paper_moe)"
        )
    root = Path(experiment.dir)
    plans = []
    for arm in experiment.arms:
        subs = plan_arm(base, arm, experiment, root)
        for sub in subs:
            where = f"experiment arm {arm.name} ({sub.role})"
            run = to_run_config(sub.config, source=where)
            _check_layout(run, where)
        plans.append((arm, subs))
    return plans


def _check_layout(run, where: str) -> None:
    """The sub-run's training layout against its cluster (the launcher checks the rest, files
    included, when the sub-run starts: they may not exist before the sub-runs ahead of it)."""
    from nemo_neko.parallel import LayoutError

    model, world = run.model, run.cluster.world_size
    try:
        model.parallel.check(world, num_experts=model.num_experts, num_layers=model.num_layers)
    except LayoutError as error:
        raise LayoutError(f"{where}: {error}") from error


def run_sub(arm, sub: SubRun, log=print) -> int:
    """Run one sub-run to completion (or skip it, done before); the launcher's exit status."""
    import importlib

    from nemo_neko.config import save_run_config, to_run_config
    from nemo_neko.launch import RUNNERS, check

    if done_record(sub) is not None:
        log(f"experiment: {arm.name}/{sub.role} done before ({sub.run_dir})")
        return 0
    run = to_run_config(sub.config, source=f"experiment arm {arm.name} ({sub.role})")
    set_aside_if_stale(sub, log)
    check(run)
    runner = importlib.import_module(RUNNERS[run.cluster.kind])
    runner.check(run)
    print_ = fingerprint(sub)
    write_json_atomic(sub.run_dir / STARTED_FILE, {"fingerprint": print_})
    save_run_config(sub.config, sub.run_dir / "config.yaml")
    log(f"experiment: {arm.name}/{sub.role} -> {sub.run_dir}")
    start = time.monotonic()
    status = runner.start(run, sub.run_dir)
    if status:
        return status
    planned = sub.config["train"].get("max_steps")
    steps = trained_steps(sub.run_dir)
    if "train" in sub.config["stages"] and planned and steps != planned:
        log(f"experiment: WARNING {arm.name}/{sub.role} trained {steps} of its {planned} steps "
            f"(the data ran out: see its metrics.jsonl)")  # fmt: skip
    record = {
        "arm": arm.name,
        "kind": str(arm.kind),
        "role": sub.role,
        "fingerprint": print_,
        "seconds": round(time.monotonic() - start, 1),
        "steps": steps,
        "planned_steps": planned,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(sub.run_dir / DONE_FILE, record)
    return 0


def progress_line(finished: int, total: int, ran: int, ran_seconds: float) -> str:
    """``"5/8 sub-runs done, ETA 12m30s"``: the ETA at the mean time of the sub-runs this call
    ran (sub-runs differ: a rough figure)."""
    line = f"{finished}/{total} sub-runs done"
    if ran and finished < total:
        line += f", ETA {format_duration(ran_seconds / ran * (total - finished))}"
    return line


def describe_plan(plans) -> str:
    """The dry run's text: every arm's sub-runs, their directories and budgets."""
    lines = []
    for arm, subs in plans:
        for sub in subs:
            train = sub.config["train"]
            extra = f", datasets {sub.datasets}" if sub.datasets else ""
            start = f", from {train['init_from']}" if train.get("init_from") else ""
            lines.append(
                f"arm {arm.name} ({arm.kind}) {sub.role}: {sub.run_dir}, "
                f"{train.get('max_steps')} steps, stages {sub.config['stages']}{extra}{start}"
            )
    return "\n".join(lines)


def run_experiment(cfg, run, log=print) -> int:
    """Run (or dry-run) the experiment of the composed config ``cfg`` (``run`` its checked
    :class:`~nemo_neko.config.RunConfig`); module docstring."""
    from omegaconf import OmegaConf

    from nemo_neko.experiment.compare import write_comparison

    experiment = run.experiment
    if str(run.cluster.kind) != "local":
        raise ValueError(
            f"experiment {experiment.name}: the arms run one after another in this process: use "
            f"cluster=local (on a cluster, inside an allocation: salloc, then cluster=local "
            f"cluster.nproc_per_node=<GPUs>)"
        )
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    plans = plan_experiment(container, experiment)
    root = Path(experiment.dir)
    if run.dry_run:
        log(describe_plan(plans))
        return 0
    from nemo_neko.config import to_run_config

    base = to_run_config(experiment_base(container), source="the experiment's base config")
    stamp = shared_tokenizer(base, root, log)
    if stamp:
        container["data"]["tokenizer"]["path"] = str(stamp.parent)
        plans = plan_experiment(container, experiment)
        for _, subs in plans:
            for sub in subs:
                sub.inputs.append(stamp)  # a retrained tokenizer is new work for every arm
    started = time.monotonic()
    total, finished, ran, ran_seconds = sum(len(subs) for _, subs in plans), 0, 0, 0.0
    for arm, subs in plans:
        for sub in subs:
            if sub.role == "run" and arm.kind is ArmKind.btx:
                branches = [s for s in subs if s.role.startswith("branch")]
                merge_step(sub, branches, merged_dir(root, arm), log)
            skipped = done_record(sub) is not None
            sub_start = time.monotonic()
            status = run_sub(arm, sub, log)
            if status:
                return status
            finished += 1
            if not skipped:
                ran, ran_seconds = ran + 1, ran_seconds + time.monotonic() - sub_start
            log(f"experiment {experiment.name}: {progress_line(finished, total, ran, ran_seconds)}")
            if sub.role == "warmup":  # cheap, and current whenever the warm-up reran
                measure_affinity(sub.run_dir, log)
    out = write_comparison(root, plans, experiment)
    log(f"experiment {experiment.name}: {len(plans)} arms in {time.monotonic() - started:.0f} s "
        f"this call; comparison -> {out}")  # fmt: skip
    return 0
