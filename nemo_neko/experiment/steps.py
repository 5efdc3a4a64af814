"""What the runner does between sub-runs: one tokenizer for every arm, the warm-up's router
affinity, the BTX merge. Each writes a file whose content later sub-runs' fingerprints include,
and each is redone when what it was made from changed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from nemo_neko.experiment.arms import AFFINITY_FILE, DONE_FILE, SubRun
from nemo_neko.utils.files import write_json_atomic

TOKENIZER_STAMP = "experiment_tokenizer.json"
"""Beside the shared tokenizer's files: the record files and vocabulary size it was trained on."""


def _identity(path: str) -> list:
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def shared_tokenizer(run, root: Path, log=print) -> Path | None:
    """``<root>/tokenizer`` trained once on ``run``'s training records when it has neither a
    base model nor a tokenizer (every arm must read the same tokens); retrained (the old one
    moved aside) when the records or the vocabulary size changed. Returns its stamp file, or
    None when the arms have their tokenizer already."""
    from nemo_neko.train.data import train_run_tokenizer

    if run.base.source or run.data.tokenizer.path:
        return None
    target = root / "tokenizer"
    stamp = {
        "files": [_identity(p) for spec in run.data.train for p in spec.paths],
        "vocab_size": run.data.tokenizer.train_vocab_size,
    }
    stamp_path = target / TOKENIZER_STAMP
    if stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return stamp_path
    if target.exists():
        aside = stale_name(target)
        log(f"experiment: the training records changed since {target}: moved to {aside}")
        os.replace(target, aside)
    log(f"experiment: training one tokenizer for every arm -> {target}")
    train_run_tokenizer(run, target)
    write_json_atomic(stamp_path, stamp)
    return stamp_path


def stale_name(path: Path) -> Path:
    """``<path>.stale-<n>``, the first free ``n``."""
    n = 1
    while path.with_name(f"{path.name}.stale-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}.stale-{n}")


def training_routing_counts(run_dir: Path) -> tuple[list[str], list[list[float]], int]:
    """``(datasets, counts [D][E], steps logged)``: each training dataset's routed (token,
    expert) pairs over the run's logged training steps (``routing/<dataset>/expert<e>`` of
    ``metrics.jsonl``, all MoE layers, forced and gate choices; each log counts the steps since
    the one before)."""
    from nemo_neko.config import load_run_config
    from nemo_neko.paths import RunPaths
    from nemo_neko.utils.jsonl import iter_json_lines

    paths = RunPaths(run_dir)
    run = load_run_config(paths.config)
    names = [spec.name for spec in run.data.train]
    experts = run.model.num_experts
    counts = [[0.0] * experts for _ in names]
    steps = 0
    for line in iter_json_lines(paths.metrics):
        entry = line.value
        if not entry or entry.get("kind") != "train" or f"routing/{names[0]}/expert0" not in entry:
            continue
        steps += 1
        for d, name in enumerate(names):
            for e in range(experts):
                counts[d][e] += entry[f"routing/{name}/expert{e}"]
    return names, counts, steps


def measure_affinity(warmup_dir: Path, log=print) -> Path:
    """``<warmup_dir>/affinity.json`` from the warm-up's training routing statistics: each
    dataset's gate choices per expert (``routing/<dataset>/expert<e>`` of ``metrics.jsonl``,
    all MoE layers, summed over the logged steps; each log counts the steps since the one
    before, so a warm-up run in one go counts every step). The warm-up routes with plain top-k
    (no forcing): every choice is the gate's."""
    from nemo_neko.moe.assignment_solver import affinity_document, affinity_from_counts
    from nemo_neko.paths import RunPaths

    paths = RunPaths(warmup_dir)
    names, counts, steps = training_routing_counts(warmup_dir)
    if not steps:
        raise ValueError(f"{paths.metrics}: no routing statistics logged in the warm-up")
    unseen = [name for name, row in zip(names, counts) if not sum(row)]
    if unseen:
        raise ValueError(
            f"{paths.metrics}: the warm-up saw no token of {unseen}: raise experiment.warmup_steps"
        )
    affinity = affinity_from_counts([[row] for row in counts])
    document = affinity_document(names, affinity)
    document["measured"] = {"steps_logged": steps, "gate_choices": counts}
    out = warmup_dir / AFFINITY_FILE
    write_json_atomic(out, document)
    log(f"experiment: router affinity of {len(names)} datasets -> {out}")
    return out


def merge_step(sub: SubRun, branches: list[SubRun], merged: Path, log=print) -> None:
    """The ``btx`` arm's merged checkpoint at ``merged`` from its finished ``branches``; merged
    again (the old one removed) when a branch or the mix's model or router settings changed."""
    from nemo_neko.config import to_run_config
    from nemo_neko.data.tokenizer import TextTokenizer
    from nemo_neko.experiment.btx import merge_branches
    from nemo_neko.paths import RunPaths

    run = to_run_config(sub.config, source="btx mix")
    made_from = {
        "branch_runs": [(b.run_dir / DONE_FILE).read_text() for b in branches],
        "model": json.dumps(sub.config["model"], sort_keys=True, default=str),
        "router": [str(run.base.router_init), run.base.router_std, run.seed],
    }
    record = merged / "merge.json"
    if record.exists():
        if json.loads(record.read_text()).get("made_from") == made_from:
            log(f"btx: {merged} (merged before)")
            return
        log(f"btx: the branches or the mix's settings changed since {merged}: merging again")
        shutil.rmtree(merged)
    tokenizer = TextTokenizer.from_dir(RunPaths(branches[0].run_dir).tokenizer)
    merge_branches(
        run.model,
        [b.run_dir for b in branches],
        merged,
        padded_vocab=run.model.padded_vocab_size(tokenizer.vocab_size),
        router_init=str(run.base.router_init),
        router_std=run.base.router_std,
        seed=run.seed,
        log=log,
        extra={"made_from": made_from},
    )
