"""The run configuration: one typed schema (dataclasses), YAML under ``nemo_neko/conf/`` only
selects and overrides.

The schema holds every default (the paper's training recipe is :class:`TrainConfig`'s defaults);
``conf/config.yaml`` composes the groups ``model``, ``data`` and ``cluster`` over
:class:`RunConfig`, each file setting only what differs; :func:`register_configs` puts the schema in Hydra's ConfigStore so every YAML
is validated on load (unknown keys and wrong types are errors naming the key). A resolved run
config is saved as ``<run_dir>/config.yaml`` and reloaded with :func:`load_run_config`, so every
process of a run (torchrun ranks, Slurm tasks, the correction step) reads the same settings.

``${asset:hyporadise/train/atis.jsonl.gz}`` in YAML resolves to a file shipped in the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from nemo_neko.data.mixture import DatasetSpec
from nemo_neko.data.samples import PromptFormat
from nemo_neko.experiment.config import ExperimentConfig
from nemo_neko.model.config import ModelConfig
from nemo_neko.moe.config import TaskRoutingConfig

ASSETS = Path(__file__).resolve().parent / "assets"
CONF_DIR = Path(__file__).resolve().parent / "conf"
"""The Hydra configs shipped in the package (``conf/config.yaml`` and its groups)."""


class Stage(StrEnum):
    """What a run does, in order (``stages``)."""

    prepare = "prepare"
    """Fetch, import and upcycle ``base.source`` (nothing to do without one)."""
    train = "train"
    correct = "correct"
    report = "report"
    leaderboard = "leaderboard"
    """The Open ASR Leaderboard path (nothing to do without ``leaderboard.sets``)."""


STAGES = tuple(s.value for s in Stage)


class ClusterKind(StrEnum):
    """Where a run executes (``cluster.kind``); each has its module in :mod:`nemo_neko.launch`."""

    local = "local"
    """torchrun in place."""
    slurm = "slurm"
    """an sbatch job."""


class GPU(StrEnum):
    """The GPU of a cluster's nodes (``cluster.gpu``): its memory for the dry run's fit check."""

    h100 = "h100"
    """NVIDIA H100 SXM, 80 GB HBM3."""
    h200 = "h200"
    """NVIDIA H200 SXM, 141 GB HBM3e."""

    @property
    def memory_gib(self) -> float:
        """Nominal memory per GPU, taken as GiB (the devices report about 79.6 and 139.8 GiB;
        ``cluster.gpu_memory_gib`` sets a figure with a margin)."""
        return {GPU.h100: 80.0, GPU.h200: 141.0}[self]


class Launcher(StrEnum):
    """How a Slurm job starts the training ranks (``cluster.launcher``)."""

    srun = "srun"
    """one task per rank."""
    torchrun = "torchrun"
    """one task per node, torchrun starting ``nproc_per_node`` ranks."""


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
    prompt_format: PromptFormat = PromptFormat.plain
    """``plain`` (prompt, newline, target, EOS) or ``chat`` (the tokenizer's chat template: the
    task prompt as the user turn, the target as the assistant turn; instruct/chat models)."""
    system_prompt: str | None = None
    """``chat``: the system turn's text; None = the chat template's own default."""
    skip_invalid: bool = False
    """Count and report invalid records instead of stopping at the first."""


class RouterInit(StrEnum):
    """How an upcycled model's new routers start (``base.router_init``)."""

    normal = "normal"
    zeros = "zeros"


@dataclass
class BaseModelConfig:
    """The pretrained model a run fine-tunes (:mod:`nemo_neko.convert.base_models`).

    The ``prepare`` stage fetches it (a registered name), imports it (GGUF or Hugging Face) and,
    for an MoE ``model`` and a dense source, upcycles it into ``model.num_experts`` experts at
    ``model.moe_layers``; training then starts from it unless ``train.init_from`` is set, with
    its tokenizer unless ``data.tokenizer.path`` is set.
    """

    source: str | None = None
    """A registered name (``smollm2-135m-instruct``), a ``.gguf`` file or a Hugging Face
    folder; None: no base model (``train.init_from``, or training from scratch)."""
    cache_dir: str | None = None
    """Where fetched and converted models are kept (None: ``$NEMO_NEKO_CACHE`` or
    ``~/.cache/nemo-neko``)."""
    upcycle: bool = True
    """Upcycle a dense source into the model's experts (False: the source must match as is)."""
    router_init: RouterInit = RouterInit.normal
    router_std: float = 0.02
    noise: float = 0.0
    """Std of Gaussian noise added to each upcycled expert's copy (0 = exact copies)."""


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
    global_batch_tokens: int = 2_097_152
    """Tokens per optimizer step (the paper: 2M = 512 sequences of 4096); turned into sequences of
    ``data.seq_length``."""
    micro_batch_size: int = 1
    prompt_loss_weight: float = 0.0
    """Weight of an auxiliary next-token loss on the prompt tokens, relative to a target token
    (0 = the paper: loss on the target only). Reported losses stay target-only. A model trained
    from scratch (the tiny default) uses it to learn copying from the N-best lists quickly."""
    max_steps: int | None = None
    """Stop after this many steps (default: all full global batches of ``epochs``)."""
    use_distributed_optimizer: bool = False
    freeze_embeddings: bool = False
    """Keep the word embeddings as the initial model has them (tied: the output layer too)."""
    freeze_layers_below: int = 0
    """Keep layers ``0 .. N-1`` as the initial model has them (0 = train every layer)."""
    freeze: list[str] = field(default_factory=list)
    """More frozen parameters: regular expressions over global parameter names
    (``decoder.layers.3.self_attention.linear_qkv.weight``; :mod:`nemo_neko.train.freeze`)."""
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
    """Bound relative to the input: ``ratio * tokens of the 1-best/source + extra_new_tokens``."""
    extra_new_tokens: int = 16
    """The constant part of the bound relative to the input."""
    max_records_per_dataset: int | None = None
    """Correct only the first N records of each held-out dataset (None = all)."""
    no_repeat_ngram_size: int = 0
    """Never generate an n-gram twice within one answer (0 = off; the prompt does not count)."""
    tensor_parallel: int = 1
    """Tensor-parallel size TP of ``correct`` under torchrun/srun (sequence parallelism off;
    ``--tensor-parallel`` overrides it). The checkpoint is resharded from any training layout."""
    expert_parallel: int = 1
    """Expert-parallel size EP of ``correct`` (``--expert-parallel`` overrides it). The ranks left
    over, ``world / (TP x EP)``, decode separate shares of the records."""
    pipeline_parallel: int = 1
    """Pipeline-parallel size of ``correct``: only 1 (the KV-cache decoder runs every layer on
    each rank of a replica); ``--pipeline-parallel`` overrides it."""
    nproc: int = 1
    """Ranks of the launcher's ``correct`` stage and of the ``leaderboard`` stage's correction,
    on one node (torchrun; on Slurm one ``srun`` task each on the first node): a multiple of
    ``tensor_parallel x expert_parallel`` (e.g. 8 GPUs for Mixtral 8x7B: ``generate.nproc=8
    generate.expert_parallel=8``). 1: one process."""

    def check(self) -> None:
        replica = self.tensor_parallel * self.expert_parallel
        if self.nproc < 1 or self.nproc % replica:
            raise ValueError(
                f"generate.nproc={self.nproc} must be a positive multiple of tensor_parallel x "
                f"expert_parallel = {replica}"
            )


@dataclass
class LeaderboardConfig:
    """The ``leaderboard`` stage (``python -m nemo_neko.eval leaderboard --run-dir RUN``): first
    pass, N-best lists, NeKo correction and the side-by-side leaderboard score of the test sets
    (:mod:`nemo_neko.eval.leaderboard`). Inactive while ``sets`` is empty."""

    sets: list[str] = field(default_factory=list)
    """``<dataset>_<split>=cuts.jsonl.gz`` or folders of recipe manifests."""
    first_pass: str = "canary"
    """A backend (``canary``: the leaderboard's setting; ``pocketsphinx``) or a folder/file of
    leaderboard result manifests of any model."""
    first_pass_options: dict[str, Any] = field(default_factory=dict)
    """The first-pass backend's options (canary: ``model``; ``method`` is ``first_pass``)."""
    first_pass_model: str | None = None
    """The first pass's model label in the manifests (default: from the backend or files)."""
    nbest_backend: str = "canary"
    nbest_options: dict[str, Any] = field(default_factory=dict)
    """The N-best backend's options (canary: ``model``, ``method`` beam or sample, ...)."""
    n: int = 5
    """Hypotheses per correction record, the first pass included."""
    batch_size: int = 16
    protocol: str = "oal2026"
    """``oal2026`` (the leaderboard now) or ``esb2024`` (the paper's)."""
    out: str | None = None
    """Output folder (default ``<run_dir>/leaderboard``)."""
    seed: int = 0


@dataclass
class ClusterConfig:
    """Where the run executes: ``local`` (torchrun in place) or ``slurm`` (an sbatch job).

    The world is ``nnodes x nproc_per_node`` processes; the launcher checks the model's parallel
    layout against it before anything starts or is submitted. Model configs set the size their
    default layout needs (Mixtral 8x7B: 8 nodes x 8 GPUs); cluster configs add where and how.
    ``local`` ignores the Slurm fields.
    """

    name: str = "local"
    """Name of this cluster configuration (``conf/cluster/<name>.yaml``)."""
    kind: ClusterKind = ClusterKind.local
    """``local`` (torchrun in place) or ``slurm`` (render an sbatch script and submit it)."""
    nnodes: int = 1
    """Nodes."""
    nproc_per_node: int = 1
    """Processes (ranks) per node: one per GPU, or CPU processes on a machine without GPUs."""
    backend: str | None = None
    """torch.distributed backend; None = nccl on GPU, gloo on CPU."""
    master_port: int = 29500
    """Rendezvous port on the first node."""
    master_addr: str = "127.0.0.1"
    """``local`` with ``nnodes > 1``: address of node 0 (Slurm jobs take their first node)."""
    node_rank: int = 0
    """``local`` with ``nnodes > 1``: this node's rank; run the same command on every node."""
    launcher: Launcher = Launcher.srun
    """``slurm``: ``srun`` (one task per rank) or ``torchrun`` (one task per node, torchrun
    starting ``nproc_per_node`` ranks)."""
    partition: str | None = None
    """``slurm``: partition (``--partition``); None = the cluster's default."""
    account: str | None = None
    """``slurm``: account to charge (``--account``); None = your default account."""
    gpus_per_node: int = 0
    """``slurm``: GPUs requested per node (``--gpus-per-node``); 0 = a CPU job. With GPUs it must
    equal ``nproc_per_node`` (one rank per GPU)."""
    cpus_per_task: int | None = None
    """``slurm``: CPU cores per task (``--cpus-per-task``); None = Slurm's default."""
    mem: str | None = None
    """``slurm``: memory per node (``--mem``, e.g. ``0`` = all of it); None = Slurm's default."""
    time: str | None = None
    """``slurm``: time limit (``--time``, e.g. ``04:00:00``); None = the partition's limit."""
    job_name: str | None = None
    """``slurm``: job name; None = the run's ``name``."""
    exclusive: bool = False
    """``slurm``: whole nodes only (``--exclusive``)."""
    requeue: bool = True
    """``slurm``: requeue the job when a node fails (``--requeue``), and requeue it itself
    (``scontrol requeue``) when training stopped on a signal (the warning before the time limit,
    :attr:`stop_signal_lead`); the requeued job resumes from the run's latest checkpoint and
    appends to the same log."""
    stop_signal_lead: int = 300
    """``slurm``: seconds before the time limit at which Slurm warns the job script
    (``--signal=B:USR1@<seconds>``; Slurm may send it up to a minute earlier); the script
    forwards it to the running step: training stops after its current step with a checkpoint,
    another stage is stopped, and the job requeues itself (:attr:`requeue`). Leave time for a
    step and a save. 0 = no warning."""
    container_image: str | None = None
    """``slurm``: Pyxis/enroot image for every step (``srun --container-image``), e.g.
    ``nvcr.io#nvidia/nemo:25.11`` or a ``.sqsh`` file; None = run on the host."""
    container_mounts: list[str] = field(default_factory=list)
    """``slurm`` with a container: extra ``SRC:DST`` mounts (data, checkpoints). The launch
    directory, and the run directory when outside it, are always mounted at their own paths."""
    env: dict[str, str] = field(default_factory=dict)
    """``slurm``: environment variables exported by the job script (e.g. ``NCCL_DEBUG: WARN``)."""
    srun_args: list[str] = field(default_factory=list)
    """``slurm``: extra arguments for every ``srun`` (e.g. ``--mpi=pmix``)."""
    sbatch_args: list[str] = field(default_factory=list)
    """``slurm``: extra ``#SBATCH`` options (e.g. ``--qos=high``, ``--constraint=h100``)."""
    gpu: GPU | None = None
    """The nodes' GPU, ``h100`` or ``h200``: the dry run checks the memory plan per GPU against
    its memory (None: unknown, unless ``gpu_memory_gib`` is set)."""
    gpu_memory_gib: float | None = None
    """Memory per GPU in GiB for the dry run's fit check; overrides ``gpu``'s (other GPUs, or a
    margin for the CUDA context and NCCL buffers: e.g. 76 for an H100)."""
    python: str | None = None
    """``slurm``: Python interpreter of the job steps; None = ``python`` inside a container, the
    launcher's own interpreter otherwise (a shared file system is assumed)."""

    @property
    def world_size(self) -> int:
        """Processes in the run: ``nnodes x nproc_per_node``."""
        return self.nnodes * self.nproc_per_node

    @property
    def gpu_memory_bytes(self) -> float | None:
        """Memory per GPU in bytes (``gpu_memory_gib``, else ``gpu``'s), None when unknown."""
        gib = self.gpu_memory_gib or (self.gpu.memory_gib if self.gpu else None)
        return gib * 1024**3 if gib else None

    def __post_init__(self) -> None:
        for name, choices in (("kind", ClusterKind), ("launcher", Launcher), ("gpu", GPU)):
            value = getattr(self, name)
            if value is None and name == "gpu":
                continue
            if value not in tuple(choices):
                known = " or ".join(c.value for c in choices)
                raise ValueError(f"cluster {self.name!r}: {name} must be {known}, got {value!r}")
            setattr(self, name, choices(value))

    def check(self) -> None:
        """Raise ``ValueError`` naming the broken rule (sizes, node rank, GPUs per rank)."""
        if self.nnodes < 1 or self.nproc_per_node < 1:
            raise ValueError(
                f"cluster {self.name!r}: nnodes ({self.nnodes}) and nproc_per_node "
                f"({self.nproc_per_node}) must be >= 1"
            )
        if self.gpu_memory_gib is not None and self.gpu_memory_gib <= 0:
            raise ValueError(
                f"cluster {self.name!r}: gpu_memory_gib must be > 0, got {self.gpu_memory_gib}"
            )
        if self.kind == "local" and not 0 <= self.node_rank < self.nnodes:
            raise ValueError(
                f"cluster {self.name!r}: node_rank={self.node_rank} is not in [0, {self.nnodes})"
            )
        if self.kind == "slurm":
            if not 0 <= self.stop_signal_lead <= 65535:
                raise ValueError(
                    f"cluster {self.name!r}: stop_signal_lead={self.stop_signal_lead} must be "
                    f"in [0, 65535] seconds (0: no warning before the time limit)"
                )
            if self.gpus_per_node < 0:
                raise ValueError(f"cluster {self.name!r}: gpus_per_node must be >= 0")
            if self.gpus_per_node and self.gpus_per_node != self.nproc_per_node:
                raise ValueError(
                    f"cluster {self.name!r}: {self.gpus_per_node} GPUs per node but "
                    f"nproc_per_node={self.nproc_per_node}; every rank needs its own GPU "
                    f"(set both, e.g. cluster.nproc_per_node={self.gpus_per_node})"
                )


@dataclass
class RunConfig:
    """Everything a run needs."""

    name: str = "neko"
    run_dir: str = "runs/${name}"
    seed: int = 1234
    stages: list[Stage] = field(default_factory=lambda: list(Stage))
    """What the launcher runs, in order: prepare, train, correct, report, leaderboard (each only
    when it has work: :meth:`active_stages`)."""
    dry_run: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    routing: TaskRoutingConfig = field(default_factory=TaskRoutingConfig)
    """Task-guided routing: the dataset -> expert assignment and the switches (resolved against
    ``data.train`` by :meth:`task_routing`)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    leaderboard: LeaderboardConfig = field(default_factory=LeaderboardConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    """Arms compared on this config's data, budget and seed (none: a single run;
    :mod:`nemo_neko.experiment`)."""

    def active_stages(self) -> list[Stage]:
        """The stages that have work: ``prepare`` only with a ``base.source``, ``leaderboard``
        only with ``leaderboard.sets``."""
        idle = set()
        if self.base.source is None:
            idle.add(Stage.prepare)
        if not self.leaderboard.sets:
            idle.add(Stage.leaderboard)
        return [s for s in self.stages if s not in idle]

    def task_routing(self) -> TaskRoutingConfig:
        """The routing the model's layers use: training dataset ``i`` is task ``i``, mapped to
        its expert by ``routing.assignment``; empty for a dense model (nothing to route)."""
        if not self.model.num_experts:
            return TaskRoutingConfig()
        return self.routing.resolve([spec.name for spec in self.data.train], self.model.num_experts)


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


class ConfigError(ValueError):
    """A config that breaks the schema: ``<source>: <key>: <problem>``, one line.

    Attributes:
        source: where the config came from (a file, an override, ``"config"``).
        key: the dotted key at fault (``train.save_intervall``), or None.
        problem: what is wrong with it.
    """

    def __init__(self, source: str, key: str | None, problem: str):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def schema_problem(error: Exception) -> tuple[str | None, str]:
    """``(dotted key, one-line problem)`` of an OmegaConf error (unknown key, wrong type...)."""
    import difflib
    import re

    key = getattr(error, "full_key", None) or None
    message = " ".join(str(getattr(error, "msg", None) or error).split("\n")[0].split())
    object_type = getattr(error, "object_type", None)
    unknown = re.match(r"Key '([^']+)' not in '([^']+)'", message)
    if unknown:
        known = [f.name for f in fields(object_type)] if is_dataclass(object_type) else []
        near = difflib.get_close_matches(unknown.group(1), known, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        return key, f"no such key in {unknown.group(2)}{hint}"
    return key, message


def to_run_config(cfg: Any, source: str = "config") -> RunConfig:
    """A composed/loaded OmegaConf config as a validated :class:`RunConfig` object.

    Every key is checked against the schema, also those added with Hydra's ``+key=value``
    (which a composed config would otherwise carry unchecked into the saved run config).

    Raises:
        ConfigError: an unknown key, a wrong type, an unresolvable value or a broken rule,
            in one line starting with ``source``.
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_resolvers()
    try:
        plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
        run = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(source, *schema_problem(error)) from None
    try:
        validate_run_config(run)
    except ValueError as error:
        raise ConfigError(source, None, str(error)) from None
    return run


def save_run_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config (interpolations replaced by values) as YAML."""
    from omegaconf import OmegaConf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    container = OmegaConf.to_container(
        OmegaConf.structured(cfg) if not _is_omega(cfg) else cfg, resolve=True, enum_to_str=True
    )
    tmp = Path(str(path) + ".tmp")
    try:
        tmp.write_text(OmegaConf.to_yaml(container))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _is_omega(cfg: Any) -> bool:
    from omegaconf import DictConfig

    return isinstance(cfg, DictConfig)


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read a saved run config (``<run_dir>/config.yaml``)."""
    from omegaconf import OmegaConf

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no run config (was the run launched with launch/run.py?)")
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError) as error:  # YAML syntax errors are ValueErrors
        raise ConfigError(str(path), None, " ".join(str(error).split())) from None
    return to_run_config(cfg, source=str(path))


def validate_run_config(run: RunConfig) -> None:
    """Raise ``ValueError`` naming the broken rule; runs before anything is built."""
    if run.data.train:
        _check_specs(run.data.train, "data.train")
    if run.data.test:
        _check_specs(run.data.test, "data.test")
    if run.model.num_experts and run.model.moe_router_topk > run.model.num_experts:
        raise ValueError(
            f"model.moe_router_topk={run.model.moe_router_topk} exceeds model.num_experts={run.model.num_experts}"
        )
    if not 0 <= run.train.warmup_fraction < 1:
        raise ValueError(
            f"train.warmup_fraction must be in [0, 1), got {run.train.warmup_fraction}"
        )
    run.cluster.check()
    run.generate.check()
    run.experiment.check(
        [s.name for s in run.data.train],
        [s.name for s in run.data.test],
        run.train.max_steps,
        run.model.num_experts,
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
