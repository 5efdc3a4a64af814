"""Micro training runs for tests: the real conf/ composed with overrides for a very small model
and a few dozen records per dataset, written to a temporary run directory."""

from __future__ import annotations

from pathlib import Path

from nemo_neko.config import CONF_DIR
from nemo_neko.data.records import read_records, write_records
from nemo_neko.data.sample_data import sample_paths

__all__ = [
    "CONF_DIR",
    "MICRO_OVERRIDES",
    "compose_run",
    "train_run",
    "write_micro_data",
    "write_micro_run",
]

MICRO_OVERRIDES = [
    "model=tiny",
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.num_attention_heads=4",
    "model.num_query_groups=2",
    "model.ffn_hidden_size=128",
    "model.moe_ffn_hidden_size=64",
    "data.seq_length=256",
    "data.tokenizer.train_vocab_size=512",
    "train.global_batch_tokens=1024",
    "train.micro_batch_size=2",
    "train.epochs=1",
    "train.log_interval=1",
    "train.eval_interval=0",
    "train.save_interval=0",
    "train.tensorboard=false",
    "generate.batch_size=8",
    "generate.max_new_tokens=24",
]


def write_micro_data(
    root: Path, domains=("atis", "td3"), train_records: int = 48, test_records: int = 8
) -> list[str]:
    """Small record files cut from the shipped sample; returns data overrides pointing at them."""
    overrides = []
    for split, count in (("train", train_records), ("test", test_records)):
        specs = []
        for domain, path in zip(domains, sample_paths(split, tuple(domains))):
            out = root / split / f"{domain}.jsonl"
            write_records(out, read_records(path)[:count])
            specs.append(f"{{name: {domain}, paths: ['{out}']}}")
        overrides.append(f"data.{split}=[{', '.join(specs)}]")
    return overrides


def compose_run(
    run_dir: Path,
    overrides: list[str] = (),
    *,
    data_root: Path | None = None,
    model: str = "tiny",
):
    """The composed config (``DictConfig``) of a micro run in ``run_dir``.

    ``model`` picks the shipped model config the micro dimensions shrink (``tiny`` by default;
    e.g. ``8x7b`` keeps that file's other settings: layout, dtype, optimizer)."""
    from hydra import compose, initialize_config_dir

    from nemo_neko.config import register_configs

    register_configs()
    data = write_micro_data(data_root or run_dir.parent / "micro_data")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(
            config_name="config",
            overrides=[
                f"run_dir={run_dir}",
                f"model={model}",
                *MICRO_OVERRIDES[1:],
                *data,
                *overrides,
            ],
        )


def write_micro_run(run_dir: Path, overrides: list[str] = (), **kwargs) -> Path:
    """Compose a micro run and write its ``config.yaml``; returns that path."""
    from nemo_neko.config import save_run_config

    cfg = compose_run(run_dir, overrides, **kwargs)
    save_run_config(cfg, run_dir / "config.yaml")
    return run_dir / "config.yaml"


def train_run(rank: int, world_size: int, config_path: str) -> None:
    """Train the run whose ``config.yaml`` is ``config_path``, in its folder: the target of
    :func:`nemo_neko.testing.distributed.run_distributed` (``run_distributed(train_run, 1,
    str(config))``)."""
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import train

    train(load_run_config(config_path), Path(config_path).parent)
