"""The run configuration: one typed schema (dataclasses), YAML under ``conf/`` only selects and
overrides.

``conf/config.yaml`` composes the groups ``model``, ``data``, ``train`` and ``cluster`` over
:class:`RunConfig`; :func:`register_configs` puts the schema in Hydra's ConfigStore so every YAML
is validated on load (unknown keys and wrong types are errors naming the key). A resolved run
config is saved as ``<run_dir>/config.yaml`` and reloaded with :func:`load_run_config`, so every
process of a run (torchrun ranks, Slurm tasks, the correction step) reads the same settings.

``${asset:hyporadise/train/atis.jsonl.gz}`` in YAML resolves to a file shipped in the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_neko.data.mixture import DatasetSpec
from nemo_neko.moe.assignment import TaskAssignmentConfig
from nemo_neko.train.model import ModelConfig

ASSETS = Path(__file__).resolve().parent / "assets"
STAGES = ("train", "correct", "report")


@dataclass
class TokenizerConfig:
    """Where the tokenizer comes from."""

    path: str | None = None
    """Hugging Face tokenizer directory (production: the base model's tokenizer)."""
    train_vocab_size: int = 4096
    """With no ``path``: train a byte-level BPE of this size on the training records."""


@dataclass
class DataConfig:
    """Training mixture and held-out sets."""

    name: str = "custom"
    train: list[DatasetSpec] = field(default_factory=list)
    """Training datasets; dataset i is task i and gets its expert from ``routing``."""
    test: list[DatasetSpec] = field(default_factory=list)
    """Held-out records: validation loss during training, correction and report afterwards."""
    seq_length: int = 2048
    """Tokens per packed sequence."""
    max_sample_length: int | None = None
    pack_window: int = 4096
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    skip_invalid: bool = False
    """Count and report invalid records instead of stopping at the first."""


@dataclass
class RoutingSettings:
    """NeKo's task-guided routing (see :class:`nemo_neko.moe.TaskRoutingConfig`)."""

    assignment: TaskAssignmentConfig = field(default_factory=TaskAssignmentConfig)
    forcing: bool = True
    aux_loss_counts_forced: bool = True
    collect_routing_stats: bool = True


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging, checkpointing."""

    lr: float = 1e-4
    min_lr: float = 0.0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    warmup_fraction: float = 0.1
    """Linear warm-up over this share of the steps, then cosine decay to ``min_lr``."""
    clip_grad: float = 1.0
    epochs: int = 3
    global_batch_tokens: int = 2_000_000
    """Tokens per optimizer step (the paper: 2M); turned into sequences of ``data.seq_length``."""
    micro_batch_size: int = 1
    max_steps: int | None = None
    """Stop after this many steps (default: all full global batches of ``epochs``)."""
    use_distributed_optimizer: bool = False
    init_from: str | None = None
    """A model checkpoint (e.g. imported from Hugging Face) to start from when the run has no
    checkpoint of its own: model weights only, fresh optimizer and schedule."""
    log_interval: int = 10
    eval_interval: int = 200
    eval_sequences: int = 16
    """Packed held-out sequences used for the validation loss."""
    save_interval: int = 500
    keep_checkpoints: int = 2
    tensorboard: bool = True
    wandb_project: str | None = None


@dataclass
class GenerateConfig:
    """Correction (generation) of the held-out sets after training."""

    batch_size: int = 32
    max_new_tokens: int = 256
    """Hard bound on generated tokens."""
    new_tokens_per_input_token: float = 2.0
    """Bound relative to the input: ``ratio * tokens of the 1-best/source + 16``."""
    max_records_per_dataset: int | None = None
    """Correct only the first N records of each held-out dataset (None = all)."""


@dataclass
class ClusterConfig:
    """Where the run executes (``local``: torchrun in place; ``slurm``: sbatch)."""

    kind: str = "local"
    nproc_per_node: int = 1
    nnodes: int = 1
    backend: str | None = None
    """torch.distributed backend; None = nccl on GPU, gloo on CPU."""
    master_port: int = 29500


@dataclass
class RunConfig:
    """Everything a run needs."""

    name: str = "neko"
    run_dir: str = "runs/${name}"
    seed: int = 1234
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    """What the launcher runs, in order: train, correct, report."""
    dry_run: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def _asset(relative: str) -> str:
    path = ASSETS / relative
    if not path.exists():
        raise FileNotFoundError(f"${{asset:{relative}}}: no such file shipped in {ASSETS}")
    return str(path)


def register_resolvers() -> None:
    """``${asset:...}``: a file shipped in the package. Idempotent."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", _asset)


def register_configs() -> None:
    """Put :class:`RunConfig` in Hydra's ConfigStore as ``neko_schema`` (used by conf/config.yaml)."""
    from hydra.core.config_store import ConfigStore

    register_resolvers()
    ConfigStore.instance().store(name="neko_schema", node=RunConfig)


def to_run_config(cfg: Any) -> RunConfig:
    """A composed/loaded OmegaConf config as a validated :class:`RunConfig` object."""
    from omegaconf import OmegaConf

    register_resolvers()
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    run = OmegaConf.to_object(merged)
    validate_run_config(run)
    return run


def save_run_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config (interpolations replaced by values) as YAML."""
    from omegaconf import OmegaConf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    container = OmegaConf.to_container(
        OmegaConf.structured(cfg) if not _is_omega(cfg) else cfg, resolve=True
    )
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(container))
    os.replace(tmp, path)


def _is_omega(cfg: Any) -> bool:
    from omegaconf import DictConfig

    return isinstance(cfg, DictConfig)


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read a saved run config (``<run_dir>/config.yaml``)."""
    from omegaconf import OmegaConf

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no run config (was the run launched with launch/run.py?)")
    return to_run_config(OmegaConf.load(path))


def validate_run_config(run: RunConfig) -> None:
    """Raise ``ValueError`` naming the broken rule; runs before anything is built."""
    unknown = [s for s in run.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"stages {unknown} unknown (known: {list(STAGES)})")
    if run.data.train:
        _check_specs(run.data.train, "data.train")
    if run.data.test:
        _check_specs(run.data.test, "data.test")
    if run.model.moe_router_topk > run.model.num_experts:
        raise ValueError(
            f"model.moe_router_topk={run.model.moe_router_topk} exceeds model.num_experts={run.model.num_experts}"
        )
    if not 0 <= run.train.warmup_fraction < 1:
        raise ValueError(
            f"train.warmup_fraction must be in [0, 1), got {run.train.warmup_fraction}"
        )
    if run.train.global_batch_tokens < run.data.seq_length:
        raise ValueError(
            f"train.global_batch_tokens={run.train.global_batch_tokens} is less than one sequence "
            f"(data.seq_length={run.data.seq_length})"
        )


def _check_specs(specs: list[DatasetSpec], where: str) -> None:
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{where}: dataset names repeated: {repeated}")
    for spec in specs:
        if not spec.paths:
            raise ValueError(f"{where}: dataset {spec.name!r} has no record files")
