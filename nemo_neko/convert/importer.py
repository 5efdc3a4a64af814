"""Hugging Face -> Megatron: import a checkpoint (or upcycle a dense one) into a distributed
checkpoint that ``train.init_from`` loads, tensor chunk by tensor chunk.

Output folder::

    <out>/
        metadata.json, .metadata, __0_*.distcp (+ common.pt)   the Megatron distributed checkpoint
        tokenizer/            the Hugging Face tokenizer files (data.tokenizer.path)
        neko_model.yaml       the ModelConfig it was written for (``model:`` block)
        hf_config.json        the source config.json (export writes it back)
        conversion.json       source, architecture, dtype, layout, vocabulary padding

Memory: the model skeleton lives on the meta device; each stored chunk (one parameter of one
layer / expert, or a half of a gated ``linear_fc1``) is written in pieces (row blocks of at most
``max(16 MiB, largest parameter / 8)``), each assembled from the source rows it covers, read
straight from the safetensors files into the piece, written, and dropped. Peak memory above the
process baseline: a few pieces (PyTorch's writer drops one when the next is made), plus a source
block when dtypes differ (``--dtype``): 0.7 x the largest tensor in the memory benchmark.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch

from nemo_neko.convert.adapters import ConversionError, StateDictAdapter, adapter_for_hf
from nemo_neko.convert.mapping import Recipe, Rows, assemble, recipe_rows, source_rows
from nemo_neko.convert.safetensors_io import HFCheckpoint
from nemo_neko.convert.upcycle import UpcycleConfig, upcycle_recipes, upcycled_model
from nemo_neko.model.config import ModelConfig
from nemo_neko.parallel import LayoutError, ParallelLayout

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MIN_PIECE_BYTES = 16 * 2**20
PIECES_OF_LARGEST = 8
"""Stored tensors are written in pieces of ``max(16 MiB, largest parameter / 8)``: what a
conversion holds at once (and what reading one back costs, see the README)."""
IGNORED_SOURCE_TENSORS = ("rotary_emb.inv_freq",)
"""Buffers some older checkpoints store; nothing to convert."""

COMPARED_FIELDS = (
    "num_layers", "hidden_size", "num_attention_heads", "query_groups", "head_dim",
    "num_experts", "moe_router_topk", "vocab_size", "activation", "normalization",
    "layernorm_zero_centered_gamma", "add_qkv_bias", "moe_shared_expert_intermediate_size",
    "moe_shared_expert_gate", "moe_router_pre_softmax", "share_embeddings_and_output_weights",
    "rotary_base", "layernorm_epsilon", "embedding_multiplier", "moe_layers",
)  # fmt: skip
"""Fields that must agree between a checkpoint and a named model config (``--model``)."""


# -- configs and layouts ----------------------------------------------------------------------


def conf_model(name: str, conf_dir: str | Path | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of ``conf/model/<name>.yaml`` (composed like a run)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from nemo_neko.config import CONF_DIR, register_configs

    conf_dir = Path(conf_dir or CONF_DIR).resolve()
    if not (conf_dir / "model" / f"{name}.yaml").exists():
        known = sorted(p.stem for p in (conf_dir / "model").glob("*.yaml"))
        raise ConversionError(f"no model config {name!r} in {conf_dir}/model (known: {known})")
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
        cfg = compose(config_name="config", overrides=[f"model={name}"])
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), cfg.model))


def compare_models(derived: ModelConfig, named: ModelConfig) -> list[str]:
    """Fields on which a checkpoint's config and a named config disagree (``field: a != b``)."""
    diffs = []
    fields = COMPARED_FIELDS + (("moe_ffn_hidden_size",) if derived.num_experts else ())
    for field in fields:
        a, b = getattr(derived, field), getattr(named, field)
        if field == "vocab_size" and b is None:
            continue
        if isinstance(a, float) or isinstance(b, float):
            same = a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6)
            same = same or (a is None and b is None)
        else:
            same = a == b
        if not same:
            diffs.append(f"{field}: checkpoint {a!r} != config {b!r}")
    return diffs


def check_layout(model: ModelConfig, layout: ParallelLayout) -> None:
    """Raise :class:`LayoutError` when ``model`` cannot be split as ``layout`` says."""
    tp, pp, ep = layout.tensor, layout.pipeline, layout.expert
    etp, vpp = layout.expert_tensor or tp, layout.virtual_pipeline or 1
    rules = [  # (what, its size, must divide by, the divisor's name)
        ("num_attention_heads", model.num_attention_heads, tp, "TP"),
        ("key/value heads", model.query_groups, tp, "TP"),
        ("num_layers", model.num_layers, pp * vpp, "PP x VPP"),
    ]
    if model.num_experts:
        rules += [
            ("num_experts", model.num_experts, ep, "EP"),
            ("moe_ffn_hidden_size", model.moe_ffn_hidden_size, etp, "ETP"),
            ("shared expert size", model.moe_shared_expert_intermediate_size or 0, tp, "TP"),
        ]
    else:
        rules.append(("ffn_hidden_size", model.ffn_hidden_size, tp, "TP"))
        if ep > 1:
            raise LayoutError(
                f"model {model.name!r} is dense: expert parallelism EP={ep} needs experts"
            )
    for what, size, divisor, name in rules:
        if size % divisor:
            raise LayoutError(
                f"model {model.name!r} cannot take the layout: {what}={size} is not divisible "
                f"by {name}={divisor}"
            )
    world = math.lcm(tp * pp * layout.context, etp * ep * pp)
    layout.check(world, num_experts=model.num_experts or None, num_layers=model.num_layers)


def checkpoint_dtype(name: str | None, source: torch.dtype) -> str:
    """The stored dtype: ``name`` when given, else the source's (fp16 is widened to fp32)."""
    if name is not None:
        if name not in DTYPES:
            raise ConversionError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
        return name
    return "bfloat16" if source == torch.bfloat16 else "float32"


# -- checks against the source tensors ----------------------------------------------------------


def check_names(hf: HFCheckpoint, pairs: list[tuple[str, Recipe]], tied: bool) -> None:
    """Every tensor the recipes read is in the checkpoint, with the rows the config implies, and
    none is left over (before anything is built). Raises :class:`ConversionError`."""
    used = source_rows(pairs)
    absent = sorted(n for n in used if n not in hf)
    if absent:
        raise ConversionError(
            f"config/checkpoint mismatch: {len(absent)} tensor(s) the config implies are not in "
            f"{hf.path}, e.g. {absent[:3]}"
        )
    ignore = {"lm_head.weight"} if tied else set()
    left = sorted(
        n
        for n in hf.names()
        if n not in used and n not in ignore and not n.endswith(IGNORED_SOURCE_TENSORS)
    )
    if left:
        raise ConversionError(
            f"config/checkpoint mismatch: {len(left)} tensor(s) in the checkpoint have no place in "
            f"the model its config.json describes, e.g. {left[:3]}"
        )
    for name, rows in used.items():
        if hf.info(name).shape[:1] != (rows,):
            raise ConversionError(
                f"config/checkpoint mismatch: {name} has {hf.info(name).shape[:1]} rows in the "
                f"checkpoint, the config implies {rows}"
            )


def check_shapes(
    hf: HFCheckpoint, pairs: list[tuple[str, Recipe]], shapes: dict[str, tuple[int, ...]]
) -> None:
    """Every parameter of the built skeleton has a recipe of its rows, and every source tensor
    the shape of the parameter it fills. Raises :class:`ConversionError`."""
    recipes = dict(pairs)
    if set(recipes) != set(shapes):
        missing, extra = sorted(set(shapes) - set(recipes)), sorted(set(recipes) - set(shapes))
        raise ConversionError(
            f"recipes and model disagree: no recipe for {missing[:3]}, no parameter for {extra[:3]}"
        )
    for param, recipe in pairs:
        if recipe_rows(recipe) != shapes[param][0]:
            raise ConversionError(
                f"{param}: the recipe gives {recipe_rows(recipe)} rows, the model has "
                f"{shapes[param][0]}"
            )
        trailing = shapes[param][1:]
        for piece in recipe.pieces:
            if isinstance(piece, Rows) and hf.info(piece.name).shape[1:] != trailing:
                raise ConversionError(
                    f"config/checkpoint mismatch: {piece.name} is "
                    f"{list(hf.info(piece.name).shape)} in the checkpoint, the config implies "
                    f"[{piece.stop - piece.start}, {', '.join(map(str, trailing))}]"
                )


# -- the conversion -----------------------------------------------------------------------------


def prepare_output(out_dir: Path, overwrite: bool) -> Path:
    """A fresh ``<out>.incomplete`` folder; ``out_dir`` must not exist unless ``overwrite``."""
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty (pass --overwrite to replace it)")
    tmp = out_dir.with_name(out_dir.name + ".incomplete")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def copy_tokenizer(source: Path, target: Path) -> list[str]:
    """Copy the Hugging Face tokenizer files of ``source`` into ``target``; returns their names."""
    names = [n for n in TOKENIZER_FILES if (source / n).is_file()]
    if names:
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy2(source / name, target / name)
    return names


def save_model_config(model: ModelConfig, path: Path) -> None:
    from omegaconf import OmegaConf

    path.write_text(OmegaConf.to_yaml({"model": OmegaConf.structured(model)}))


def load_model_config(path: Path) -> ModelConfig:
    from omegaconf import OmegaConf

    loaded = OmegaConf.load(path)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), loaded.model))


def plan_import(
    hf: HFCheckpoint,
    layout: ParallelLayout | None,
    dtype: str | None,
    model_name: str | None,
    conf_dir: str | Path | None,
    upcycle: UpcycleConfig | None,
):
    """Everything decided before writing: adapter, model config, layout, padded vocabulary and
    recipes, all checked against the checkpoint's tensor names and rows (no Megatron yet)."""
    adapter: StateDictAdapter = adapter_for_hf(hf.config)
    dense = adapter.model_config(hf.config)
    dense.params_dtype = checkpoint_dtype(dtype, hf.dtype())
    model = upcycled_model(dense, upcycle) if upcycle else dense
    if model_name is not None:
        named = conf_model(model_name, conf_dir)
        diffs = compare_models(model, named)
        if diffs:
            raise ConversionError(
                f"{hf.path} does not match model config {model_name!r}:\n  " + "\n  ".join(diffs)
            )
        model.name = named.name
        layout = layout or named.parallel
    layout = layout or ParallelLayout()
    check_layout(model, layout)
    model.parallel = dataclasses.replace(layout)
    dense.parallel = model.parallel
    padded_vocab = model.padded_vocab_size()
    pairs = adapter.recipes(dense, padded_vocab)
    if upcycle:
        pairs = upcycle_recipes(pairs, model, upcycle)
    check_names(hf, pairs, model.share_embeddings_and_output_weights)
    return adapter, model, layout, padded_vocab, pairs


def open_source(path: str | Path):
    """A checkpoint to import: a Hugging Face folder, or a ``.gguf`` file (same interface)."""
    path = Path(path)
    if path.suffix == ".gguf":
        from nemo_neko.convert.gguf_io import GGUFCheckpoint

        return GGUFCheckpoint(path)
    if path.is_file():
        raise ConversionError(f"{path}: a file that is not .gguf; give a Hugging Face folder")
    return HFCheckpoint(path)


def write_source_files(source, hf_dir: Path, tmp: Path) -> None:
    """Tokenizer, ``hf_config.json`` and ``generation_config.json`` of the source next to the
    checkpoint being written."""
    if hasattr(source, "write_tokenizer"):  # GGUF: the embedded tokenizer, converted
        source.write_tokenizer(tmp / "tokenizer")
        (tmp / "hf_config.json").write_text(json.dumps(source.config, indent=2) + "\n")
        return
    if not copy_tokenizer(hf_dir, tmp / "tokenizer"):
        log.warning("%s has no tokenizer files: set data.tokenizer.path yourself", hf_dir)
    shutil.copy2(hf_dir / "config.json", tmp / "hf_config.json")
    if (hf_dir / "generation_config.json").exists():
        shutil.copy2(hf_dir / "generation_config.json", tmp / "generation_config.json")


def import_hf(
    hf_dir: str | Path,
    out_dir: str | Path,
    *,
    layout: ParallelLayout | None = None,
    dtype: str | None = None,
    model_name: str | None = None,
    conf_dir: str | Path | None = None,
    upcycle: UpcycleConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    max_piece_bytes: int | None = None,
) -> Path:
    """Convert a Hugging Face checkpoint into a Megatron distributed checkpoint in ``out_dir``.

    Args:
        hf_dir: Hugging Face model folder (config.json, safetensors, tokenizer files), or a
            GGUF file (:mod:`nemo_neko.convert.gguf_io`: Llama architecture, dequantised).
        out_dir: output folder (see the module docstring).
        layout: the TP/PP/EP layout training will use: checked against the model, and the
            vocabulary is padded to ``128 x TP`` as the trainer does. The stored tensors are
            global, so any layout loads them. Default: ``model_name``'s layout, else TP=PP=EP=1.
        dtype: ``float32`` or ``bfloat16`` (default: the source's).
        model_name: a ``conf/model`` name to check the checkpoint against (and take the layout
            from); None = the model the checkpoint's config.json describes.
        upcycle: turn a dense checkpoint into an MoE (see :mod:`nemo_neko.convert.upcycle`).
        overwrite: replace an existing ``out_dir``.
        progress: a progress bar on stderr.
        max_piece_bytes: largest block written at once (default: ``max(16 MiB, largest
            parameter / 8)``); stored tensors are split into blocks of rows no larger.

    Returns:
        ``out_dir``.
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    hf = open_source(hf_dir)
    started = time.time()
    try:
        adapter, model, layout, padded_vocab, pairs = plan_import(
            hf, layout, dtype, model_name, conf_dir, upcycle
        )
        tmp = prepare_output(out_dir, overwrite)
        try:
            label = f"{'upcycle' if upcycle else 'import'} {hf_dir.name}"
            _write(hf, model, pairs, padded_vocab, tmp, label, progress, max_piece_bytes)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        hf.close()
    try:
        write_source_files(hf, hf_dir, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    save_model_config(model, tmp / "neko_model.yaml")
    info = {
        "source": str(hf_dir.resolve()),
        "model_type": adapter.model_type,
        "dtype": model.params_dtype,
        "layout": dataclasses.asdict(layout),
        "vocab_size": model.vocab_size,
        "padded_vocab_size": padded_vocab,
        "upcycle": dataclasses.asdict(upcycle) if upcycle else None,
        "seconds": round(time.time() - started, 1),
    }
    (tmp / "conversion.json").write_text(json.dumps(info, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _write(
    hf: HFCheckpoint,
    model: ModelConfig,
    pairs: list[tuple[str, Recipe]],
    padded_vocab: int,
    tmp: Path,
    label: str,
    progress: bool,
    max_piece_bytes: int | None = None,
) -> None:
    """Build the skeleton, check it against the recipes, stream the checkpoint into ``tmp``."""
    from nemo_neko.convert.megatron_io import (
        ChunkIndex,
        meta_model,
        single_process_world,
        write_checkpoint,
    )
    from nemo_neko.utils.progress import Progress, gibibytes

    recipes = dict(pairs)
    target = DTYPES[model.params_dtype]
    with single_process_world() as parallel:
        index = ChunkIndex(meta_model(model, padded_vocab, parallel))
        check_shapes(hf, pairs, index.shapes)
        bar = Progress(
            sum(index.nbytes(p) for p in index.shapes),
            desc=label,
            unit="B",
            enabled=progress,
            interval=5.0,
            amount=gibibytes,
        )

        def produce(param: str, start: int, stop: int) -> torch.Tensor:
            trailing = index.shapes[param][1:]
            dtype_of = lambda name: hf.info(name).dtype  # noqa: E731
            return assemble(param, recipes[param], start, stop, trailing, target, hf.read, dtype_of)

        def report(param: str, rows: int) -> None:
            bar.update(rows * index.nbytes(param) // index.shapes[param][0])

        largest = max(index.nbytes(p) for p in index.shapes)
        piece = max_piece_bytes or max(MIN_PIECE_BYTES, largest // PIECES_OF_LARGEST)
        write_checkpoint(index, tmp, produce, on_rows=report, max_piece_bytes=piece)
        bar.close()
