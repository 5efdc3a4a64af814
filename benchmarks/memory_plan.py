"""The dry run's memory plan against what the micro model really holds, on this machine's CPU.

For each case (one rank; with ``--two-ranks`` also TP2 + SP and PP2 worlds of two gloo
ranks) the micro model of the tests (``nemo_neko.testing.runs.MICRO_OVERRIDES``: 2 layers,
hidden 64, 4 heads with 2 KV groups, 8 experts of 64, top-2, vocabulary 512, 2 micro-batches
of 2 x 256 tokens) is built by the ``Trainer`` and trained; :func:`nemo_neko.testing.memory.measure`
measures on every rank the parameters, DDP gradient buffers and optimizer state exactly and
the peak of the tensors saved for the backward pass during a training step (median over
``--steps`` steps), and asks :func:`nemo_neko.model.memory_plan.plan_memory` for the same
figures. The table shows estimate / measured KiB and their ratio, one row per case (and per
pipeline stage).

The full-recomputation case uses Megatron's uniform method, one layer per checkpoint, with
task-guided forcing on (see :mod:`nemo_neko.testing.memory`).

Run::

    python benchmarks/memory_plan.py
    python benchmarks/memory_plan.py --two-ranks --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|apex).*")
warnings.filterwarnings("ignore", category=UserWarning, module="megatron")

CASES = {
    "fp32": [],
    "fp32, distributed optimizer": ["train.use_distributed_optimizer=true"],
    "bf16": ["model.params_dtype=bfloat16"],
    "bf16, distributed optimizer": [
        "model.params_dtype=bfloat16",
        "train.use_distributed_optimizer=true",
    ],
    "frozen layer 0 and embeddings": [
        "train.freeze_layers_below=1",
        "train.freeze_embeddings=true",
    ],
    "selective recompute (core_attn)": ["model.recompute_granularity=selective"],
    "full recompute (uniform, 1 layer)": [
        "model.recompute_granularity=full",
        "model.recompute_method=uniform",
        "model.recompute_num_layers=1",
    ],
}
"""One-rank cases: Hydra overrides of the micro run."""

TWO_RANK_CASES = {
    "TP2 + SP": ["model.parallel.tensor=2", "model.parallel.sequence_parallel=true"],
    "PP2": ["model.parallel.pipeline=2"],
}
"""Cases on two gloo ranks (``--two-ranks``)."""


def rows_of(name: str, results: list[dict]) -> list[dict]:
    """One row per pipeline stage (tensor-parallel peers hold the same)."""
    from nemo_neko.testing.memory import FIGURES

    rows, stages = [], set()
    for result in results:
        if result["pp_rank"] in stages:
            continue
        stages.add(result["pp_rank"])
        label = name if len(results) == 1 else f"{name}, stage {result['pp_rank']}"
        ratios = {
            f: result["estimate"][f] / result["measured"][f] if result["measured"][f] else None
            for f in FIGURES
        }
        rows.append({"case": label, **result, "ratio": ratios})
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="measured steps (after one)")
    parser.add_argument(
        "--cases", nargs="+", default=list(CASES), choices=[*CASES, *TWO_RANK_CASES]
    )
    parser.add_argument("--two-ranks", action="store_true", help="also the TP2 + SP and PP2 cases")
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    from nemo_neko.testing.memory import FIGURES, measure

    args = parse_args(argv)
    names = list(args.cases) + (list(TWO_RANK_CASES) if args.two_ranks else [])
    cases = [(n, CASES[n], 1) if n in CASES else (n, TWO_RANK_CASES[n], 2) for n in names]
    print(
        "estimate / measured KiB = ratio, per rank; activations: peak saved for backward "
        f"(median of {args.steps} steps)"
    )
    print(f"{'case':<36}" + "".join(f"{f:>26}" for f in FIGURES))
    rows = []
    for name, overrides, world_size in cases:
        for row in rows_of(name, measure(overrides, world_size, args.steps)):
            rows.append(row)
            cells = [
                f"{row['estimate'][f] / 1024:.0f} / {row['measured'][f] / 1024:.0f} = "
                f"{row['ratio'][f] or 0:.2f}"
                for f in FIGURES
            ]
            print(f"{row['case']:<36}" + "".join(f"{c:>26}" for c in cells), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
