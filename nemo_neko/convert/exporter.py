"""Megatron -> Hugging Face: export a NeKo checkpoint as a model folder that transformers, vLLM
and TensorRT-LLM load (``config.json``, safetensors shards + ``model.safetensors.index.json``,
tokenizer, ``generation_config.json`` when the source had one).

The source is any of: an imported folder (``neko_model.yaml`` inside), a training run folder
(``config.yaml`` + ``checkpoints/latest``), its ``checkpoints`` folder, or one ``step_N``
checkpoint of a run. Runs saved under any TP/PP/EP layout export alike: the stored tensors are
read back as global tensors.

The format is the source architecture when the model still fits it (an imported Mixtral,
Qwen2-MoE or Gemma), else the first that holds it exactly (an upcycled Mistral -> Mixtral, an
upcycled Gemma -> Mixtral with Gemma's particulars folded into the weights, see
:mod:`nemo_neko.convert.adapters.mixtral`). Vocabulary padding is dropped.

Memory: each Hugging Face tensor is read (only its rows: no vocabulary padding, one query
group's rows of the fused QKV...) straight into the tensor that is written, then dropped; a
stored piece costs twice its size while it is read. 1.5 x the largest tensor above the process
baseline in ``benchmarks/convert_memory.py``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from nemo_neko.convert.adapters import ADAPTERS, ConversionError, adapter_for_model
from nemo_neko.convert.importer import copy_tokenizer, load_model_config, prepare_output
from nemo_neko.convert.mapping import export_sources, source_rows
from nemo_neko.convert.safetensors_io import PlannedTensor, write_hf_weights
from nemo_neko.model.config import ModelConfig

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


@dataclass
class ExportSource:
    """A checkpoint and what it takes to describe it in Hugging Face terms."""

    checkpoint: Path
    """The distributed checkpoint folder (``metadata.json`` inside)."""
    model: ModelConfig
    hf_config: dict | None
    """The original ``config.json`` when the model was imported (ids, extra fields kept)."""
    tokenizer: Path | None
    extras: Path | None
    """A folder that may hold ``generation_config.json``."""


def _imported(folder: Path) -> tuple[dict | None, Path | None, Path | None]:
    config = folder / "hf_config.json"
    hf = json.loads(config.read_text()) if config.exists() else None
    tokenizer = folder / "tokenizer"
    return hf, (tokenizer if tokenizer.exists() else None), folder


def resolve_source(path: str | Path) -> ExportSource:
    """Find the checkpoint, the model config, the tokenizer and the original HF config."""
    from nemo_neko.model.checkpoint import Checkpointer

    path = Path(path)
    if (path / "neko_model.yaml").exists():
        hf, tokenizer, extras = _imported(path)
        return ExportSource(
            path, load_model_config(path / "neko_model.yaml"), hf, tokenizer, extras
        )
    if (path / "config.yaml").exists() and (path / "checkpoints" / "latest").exists():
        run_dir, checkpoint = path, Checkpointer(path / "checkpoints").latest()
    elif (path / "latest").exists():
        run_dir, checkpoint = path.parent, Checkpointer(path).latest()
    elif (path / "metadata.json").exists() and (path.parent.parent / "config.yaml").exists():
        run_dir, checkpoint = path.parent.parent, path
    else:
        raise ConversionError(
            f"{path}: not a NeKo checkpoint (an imported folder with neko_model.yaml, a run "
            f"folder with config.yaml and checkpoints/latest, its checkpoints/ folder, or a step_N "
            f"checkpoint inside a run)"
        )
    from nemo_neko.config import load_run_config

    run = load_run_config(run_dir / "config.yaml")
    hf, extras = None, None
    if run.train.init_from and (Path(run.train.init_from) / "neko_model.yaml").exists():
        hf, _, extras = _imported(Path(run.train.init_from))
    tokenizer = run_dir / "tokenizer"
    return ExportSource(
        checkpoint, run.model, hf, tokenizer if tokenizer.exists() else None, extras
    )


def _vocab_size(model: ModelConfig, tokenizer: Path | None, padded: int) -> int:
    if model.vocab_size:
        return model.vocab_size
    if tokenizer is not None:
        from nemo_neko.data.tokenizer import TextTokenizer

        return TextTokenizer.from_dir(tokenizer).vocab_size
    raise ConversionError(
        f"the vocabulary size is unknown (model.vocab_size unset, no tokenizer): the checkpoint "
        f"holds {padded} padded rows; pass --vocab-size"
    )


def _open(source: ExportSource, parallel, vocab_size: int | None = None):
    """The model (dtype and vocabulary as stored), its skeleton's index and the padded
    vocabulary of a checkpoint (inside the single-process world ``parallel``)."""
    from nemo_neko.compat import megatron as mc
    from nemo_neko.convert.megatron_io import ChunkIndex, meta_model

    model = dataclasses.replace(source.model)
    stored = mc.checkpoint_tensors(str(source.checkpoint))
    if "embedding.word_embeddings.weight" not in stored:
        raise ConversionError(f"{source.checkpoint}: no embedding.word_embeddings.weight stored")
    (padded_vocab, _), stored_dtype = stored["embedding.word_embeddings.weight"]
    model.params_dtype = DTYPE_NAMES[stored_dtype]
    model.vocab_size = vocab_size or _vocab_size(model, source.tokenizer, padded_vocab)
    return model, ChunkIndex(meta_model(model, padded_vocab, parallel)), padded_vocab


def read_parameters(checkpoint: str | Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Parameters ``names`` (Megatron state-dict names, whole as at TP=1) of any NeKo
    checkpoint (see :func:`resolve_source`), read one at a time."""
    from nemo_neko.convert.megatron_io import read_param, single_process_world

    source = resolve_source(checkpoint)
    with single_process_world() as parallel:
        _, index, _ = _open(source, parallel)
        unknown = [n for n in names if n not in index.shapes]
        if unknown:
            raise KeyError(f"no parameters {unknown[:3]} in {source.checkpoint}")
        return {name: read_param(index, source.checkpoint, name) for name in names}


def _token_ids(tokenizer: Path) -> dict[str, int]:
    """The special token ids a tokenizer folder declares (none when it cannot be read)."""
    from nemo_neko.data.tokenizer import TextTokenizer

    try:
        tok = TextTokenizer.from_dir(tokenizer)
    except (ValueError, FileNotFoundError):
        return {}
    ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}
    if tok.special["pad"]:
        ids["pad_token_id"] = tok.pad_id
    return {k: v for k, v in ids.items() if v is not None}


def export_hf(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    dtype: str | None = None,
    architecture: str | None = None,
    vocab_size: int | None = None,
    max_shard_bytes: int = 5 * 2**30,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a Hugging Face model folder for a NeKo checkpoint.

    Args:
        checkpoint: an imported folder, a run folder, its ``checkpoints`` folder or a step.
        out_dir: the Hugging Face folder to write.
        dtype: ``float32`` or ``bfloat16`` (default: as stored).
        architecture: a Hugging Face ``model_type`` to write (default: see the module docstring).
        vocab_size: rows of the embedding to keep (default: the model's, else the tokenizer's).
        max_shard_bytes: safetensors shard size.
        overwrite: replace an existing ``out_dir``.
        progress: a progress bar on stderr.
    """
    if dtype not in (None, *DTYPE_NAMES.values()):
        raise ConversionError(f"dtype must be one of {sorted(DTYPE_NAMES.values())}, got {dtype!r}")
    source = resolve_source(checkpoint)
    out_dir = Path(out_dir)
    tmp = prepare_output(out_dir, overwrite)
    try:
        config = _export(
            source, tmp, out_dir.name, dtype, architecture, vocab_size, max_shard_bytes, progress
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if source.extras is not None and (source.extras / "generation_config.json").exists():
        shutil.copy2(source.extras / "generation_config.json", tmp / "generation_config.json")
    if source.tokenizer is not None:
        copy_tokenizer(source.tokenizer, tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _export(source, tmp, label, dtype, architecture, vocab_size, max_shard_bytes, progress) -> dict:
    """Write the weights into ``tmp``; returns the ``config.json`` dict."""
    from nemo_neko.convert.megatron_io import read_rows, single_process_world
    from nemo_neko.utils.progress import Progress, gibibytes

    with single_process_world() as parallel:
        model, index, padded_vocab = _open(source, parallel, vocab_size)
        prefer = architecture or (source.hf_config or {}).get("model_type")
        adapter = adapter_for_model(model, prefer)
        if architecture and adapter.model_type != architecture:
            raise ConversionError(
                f"model {model.name!r} cannot be written as {architecture!r} "
                f"(it fits {adapter.model_type!r}; known: {sorted(ADAPTERS)})"
            )
        pairs = adapter.recipes(model, padded_vocab)
        unknown = sorted({p for p, _ in pairs} - set(index.shapes))
        if unknown:
            raise ConversionError(f"the model has no parameters {unknown[:3]}")
        sources, rows = export_sources(pairs), source_rows(pairs)
        out_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype, index.dtype)
        plan = [
            PlannedTensor(name, out_dtype, (rows[name], *index.shapes[parts[0].param][1:]))
            for name, parts in sources.items()
        ]
        planned = {t.name: t for t in plan}

        def produce(name: str) -> torch.Tensor:
            t = planned[name]
            out = torch.empty(t.shape, dtype=index.dtype)
            parts = sources[name]
            requests = [(s.param, s.start, s.stop, out[s.hf_start : s.hf_stop]) for s in parts]
            read_rows(index, source.checkpoint, requests)
            out = out if out.dtype == t.dtype else out.to(t.dtype)
            for s in parts:
                if s.scale != 1.0 or s.shift != 0.0:  # a folded format (Gemma-MoE as Mixtral)
                    rows = out[s.hf_start : s.hf_stop]
                    rows.copy_(rows.float() * s.scale + s.shift)
            return out

        bar = Progress(
            sum(t.nbytes for t in plan),
            desc=f"export {label}",
            unit="B",
            enabled=progress,
            interval=5.0,
            amount=gibibytes,
        )
        write_hf_weights(
            tmp, plan, produce, max_shard_bytes, on_tensor=lambda t: bar.update(t.nbytes)
        )
        bar.close()
    config = adapter.hf_config(model, model.vocab_size, source.hf_config)
    if source.tokenizer is not None:  # the special tokens the model was trained with
        config.update(_token_ids(source.tokenizer))
    if dtype is not None:
        config.update(dtype=dtype, torch_dtype=dtype)
    return config
