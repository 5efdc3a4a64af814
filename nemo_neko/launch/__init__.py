"""Launching runs: compose the config, check it, write it, run its stages where configured.

``launch/run.py`` is the Hydra entry point and holds no logic; :func:`launch` does the work:

* ``dry_run=true``: print the resolved config, the layout and the parameter counts; nothing runs;
* otherwise write ``<run_dir>/config.yaml`` (the run is reproducible from it alone) and run the
  stages (``train``, ``correct``, ``report``) on the configured cluster (:mod:`.local`).
"""

from __future__ import annotations

from pathlib import Path


def describe(run) -> str:
    """The dry-run text: layout and parameter counts computed from the config."""
    model = run.model
    vocab = model.vocab_size or run.data.tokenizer.train_vocab_size
    counts = model.num_params(vocab)
    layout = model.parallel
    world = run.cluster.nproc_per_node * run.cluster.nnodes
    return "\n".join([
        f"model {model.name}: {counts['total'] / 1e9:.3f}B parameters total, {counts['active'] / 1e9:.3f}B active per token "
        f"({counts['total']:,} / {counts['active']:,}; vocabulary {vocab})",
        f"layout: TP={layout.tensor} PP={layout.pipeline} VPP={layout.virtual_pipeline} CP={layout.context} "
        f"EP={layout.expert} ETP={layout.expert_tensor or layout.tensor} SP={layout.sequence_parallel} "
        f"on {world} processes -> DP={layout.data_parallel_size(world)}",
        f"data: {len(run.data.train)} training datasets -> {min(len(run.data.train), model.num_experts)} experts tied, "
        f"{len(run.data.test)} held-out sets, sequences of {run.data.seq_length} tokens",
        f"stages: {', '.join(run.stages)}; run dir {run.run_dir}",
    ])  # fmt: skip


def launch(cfg) -> int:
    """Run (or dry-run) the composed Hydra config ``cfg``."""
    from omegaconf import OmegaConf

    from nemo_neko.config import save_run_config, to_run_config
    from nemo_neko.launch.local import run_local
    from nemo_neko.moe.config import TaskRoutingConfig

    run = to_run_config(cfg)
    world = run.cluster.nproc_per_node * run.cluster.nnodes
    run.model.parallel.check(
        world, num_experts=run.model.num_experts, num_layers=run.model.num_layers
    )
    TaskRoutingConfig.for_datasets(
        [s.name for s in run.data.train], run.model.num_experts, run.routing.assignment
    ).validate(run.model.num_experts, run.model.moe_router_topk)
    if run.dry_run:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        print(describe(run))
        return 0
    run_dir = Path(run.run_dir)
    save_run_config(cfg, run_dir / "config.yaml")
    if run.cluster.kind == "local":
        return run_local(run, run_dir)
    raise ValueError(f"cluster.kind {run.cluster.kind!r} is not supported (known: local)")
