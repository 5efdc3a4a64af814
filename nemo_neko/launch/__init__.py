"""Launching runs: check the composed config, then dry-run it or run it on its cluster.

``python -m nemo_neko.launch`` (:mod:`nemo_neko.launch.__main__`, Hydra over the configs shipped in
``nemo_neko/conf``) is the entry point, and ``launch/run.py`` in a checkout only calls it; neither
holds logic: :func:`launch` does the work:

* check everything that can be checked before anything starts: the schema (every key, also
  ``+key=value`` ones), the cluster (:meth:`~nemo_neko.config.ClusterConfig.check`), the model's
  parallel layout against the cluster's ``nnodes x nproc_per_node`` ranks, the task-to-expert
  mapping, and every file the stages will read (:mod:`.preflight`: record files, tokenizer,
  ``train.init_from``, the run's own checkpoints);
* ``dry_run=true``: print the resolved config, the layout, the batch plan, the parameter counts,
  the memory and FLOPs plan per GPU (:func:`memory_lines`, checked against ``cluster.gpu``'s
  memory) and what the cluster would run (the torchrun commands, or the sbatch script);
  nothing is written, started or submitted;
* otherwise write ``<run_dir>/config.yaml`` (the run is reproducible from it alone) and hand the
  run to its cluster kind (:data:`RUNNERS`): :mod:`.local` runs the stages in place, :mod:`.slurm`
  submits a job that runs them.
"""

from __future__ import annotations

import importlib
from pathlib import Path

RUNNERS = {"local": "nemo_neko.launch.local", "slurm": "nemo_neko.launch.slurm"}
"""``cluster.kind`` -> its module: ``plan(run, run_dir) -> str`` (the dry-run text),
``check(run)`` (what the machine must offer, e.g. sbatch; before anything is written) and
``start(run, run_dir) -> int``."""


def describe(run) -> str:
    """The dry-run summary: parameter counts, layout, batch plan, data and stages of ``run``."""
    from nemo_neko.train.optim import plan_batches

    model, cluster = run.model, run.cluster
    tokenizer = run.data.tokenizer
    vocab = model.vocab_size or tokenizer.train_vocab_size
    counts = model.num_params(vocab)
    padded = model.num_params(vocab, padded=True)["total"]
    layout = model.parallel
    world = cluster.world_size
    dp = layout.data_parallel_size(world)
    train = run.train
    plan = plan_batches(train.global_batch_tokens, run.data.seq_length, train.micro_batch_size, dp)
    if tokenizer.path:
        source = tokenizer.path
    elif run.base.source:
        source = f"{run.base.source}'s own (the prepare stage imports it with the weights)"
    else:
        source = f"a byte-level BPE of {tokenizer.train_vocab_size} trained on data"
    lines = [
        f"model {model.name}: {counts['total'] / 1e9:.3f}B parameters total, {counts['active'] / 1e9:.3f}B active per token "
        f"({counts['total']:,} / {counts['active']:,}; vocabulary {vocab}, {padded:,} with Megatron's padded vocabulary)",
        f"layout: TP={layout.tensor} PP={layout.pipeline} VPP={layout.virtual_pipeline} CP={layout.context} "
        f"EP={layout.expert} ETP={layout.expert_tensor or layout.tensor} SP={layout.sequence_parallel} "
        f"on {cluster.nnodes} node(s) x {cluster.nproc_per_node} = {world} processes -> DP={dp}",
        f"batch: {plan.global_batch_sequences} sequences x {plan.seq_length} tokens = {plan.tokens_per_step:,} tokens "
        f"per step; micro-batch {plan.micro_batch_size}, {plan.micro_batches_per_step} micro-batches per rank",
        f"data: {len(run.data.train)} training datasets -> {min(len(run.data.train), model.num_experts)} experts tied, "
        f"{len(run.data.test)} held-out sets; tokenizer {source}",
        f"stages: {', '.join(run.stages)}; run dir {run.run_dir}; cluster {cluster.name} ({cluster.kind})",
    ]
    lines.append(memory_lines(run, plan.micro_batches_per_step))
    if model.vocab_size and not tokenizer.path and not run.base.source:
        lines.append(
            f"note: {model.name} has the published vocabulary ({model.vocab_size}) but no tokenizer: to "
            f"fine-tune the published weights set data.tokenizer.path=<Hugging Face model folder> "
            f"and train.init_from=<its converted checkpoint>"
        )
    return "\n".join(lines)


def memory_lines(run, micro_batches: int) -> str:
    """The memory and FLOPs plan per GPU of ``run`` (:mod:`nemo_neko.model.memory_plan`): its
    own setting, the table over optimizer and recomputation settings, the fit on its GPU."""
    from nemo_neko.model.memory_plan import TrainingShape, format_memory_plan
    from nemo_neko.train.freeze import frozen

    model, train = run.model, run.train
    vocab = model.padded_vocab_size(run.data.tokenizer.train_vocab_size)
    shape = TrainingShape(
        world_size=run.cluster.world_size,
        seq_length=run.data.seq_length,
        micro_batch_size=train.micro_batch_size,
        micro_batches=micro_batches,
        vocab=vocab,
        distributed_optimizer=train.use_distributed_optimizer,
        recompute=str(model.recompute_granularity) if model.recompute_granularity else None,
        recompute_modules=tuple(model.recompute_modules),
        frozen=lambda name: frozen(name, train) is not None,
    )
    gpu = run.cluster.gpu
    return format_memory_plan(
        model, shape, gpu=str(gpu) if gpu else None, gpu_bytes=run.cluster.gpu_memory_bytes
    )


def check(run) -> None:
    """Everything checkable before anything starts; raises ``ValueError`` naming the broken rule
    or ``FileNotFoundError`` naming the missing file (one line each)."""
    from nemo_neko.launch.preflight import check_inputs
    from nemo_neko.parallel import LayoutError

    cluster, model = run.cluster, run.model
    cluster.check()
    if "train" in run.active_stages():  # the training layout needs its world only to train
        try:
            model.parallel.check(
                cluster.world_size, num_experts=model.num_experts, num_layers=model.num_layers
            )
        except LayoutError as error:
            raise LayoutError(
                f"model {model.name}'s layout does not fit cluster {cluster.name} "
                f"({cluster.nnodes} node(s) x {cluster.nproc_per_node} processes = "
                f"{cluster.world_size}): {error}. Set cluster.nnodes / cluster.nproc_per_node "
                f"or model.parallel.*"
            ) from error
    if model.num_experts:  # a dense model (before upcycling) has no routing
        run.task_routing().validate(model.num_experts, model.moe_router_topk)
    check_inputs(run, Path(run.run_dir))


def launch(cfg) -> int:
    """Check, then dry-run or run the composed Hydra config ``cfg`` on its cluster."""
    from omegaconf import OmegaConf

    from nemo_neko.config import save_run_config, to_run_config

    run = to_run_config(cfg, source="the composed config")
    check(run)
    if run.experiment.arms:  # several runs and their comparison: nemo_neko.experiment
        from nemo_neko.experiment.runner import run_experiment

        return run_experiment(cfg, run)
    runner = importlib.import_module(RUNNERS[run.cluster.kind])
    run_dir = Path(run.run_dir)
    if run.dry_run:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        print(describe(run))
        print(runner.plan(run, run_dir))
        return 0
    runner.check(run)
    save_run_config(cfg, run_dir / "config.yaml")
    return runner.start(run, run_dir)
