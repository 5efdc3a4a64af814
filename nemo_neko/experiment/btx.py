"""Branch-Train-Mix's merge: dense branches become the experts of one MoE checkpoint.

Sukhbaatar et al., 2024 (BTX): copies of a dense model are fine-tuned on different data
(branches), then their FFNs become the experts of an MoE whose other weights are the branches'
average, and a new router learns to mix them. Here, for an MoE ``model`` with E experts at its
``moe_layers`` and G branches (dense runs of the same base):

* ``decoder.layers.{i}.mlp.experts.local_experts.{e}.linear_fc{1,2}.weight`` = branch
  ``e mod G``'s ``decoder.layers.{i}.mlp.linear_fc{1,2}.weight``;
* ``decoder.layers.{i}.mlp.router.weight`` ``[E, hidden]``: new, ``normal(0, router_std)``
  (seeded per layer) or zeros, as upcycling starts it;
* every other tensor: the mean of the branches' (identical where they were frozen).

The checkpoint is written one parameter at a time from the branches' latest checkpoints
(:mod:`nemo_neko.convert.megatron_io`: global tensors, loadable under any layout) into
``out_dir`` (through ``out_dir.tmp``, renamed when complete), with ``neko_model.yaml`` and
``merge.json`` (branches, expert -> branch).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from nemo_neko.model.config import ModelConfig

_EXPERT = re.compile(
    r"decoder\.layers\.(\d+)\.mlp\.experts\.local_experts\.(\d+)\.(linear_fc[12]\.weight)"
)
_DENSE_FFN = re.compile(r"decoder\.layers\.(\d+)\.mlp\.linear_fc[12]\.weight")
_ROUTER = re.compile(r"decoder\.layers\.(\d+)\.mlp\.router\.weight")


def expert_branches(num_experts: int, groups: int) -> list[int]:
    """Branch of each expert: expert ``e`` is branch ``e mod groups``."""
    return [e % groups for e in range(num_experts)]


def merge_branches(
    model: ModelConfig,
    branches: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    padded_vocab: int,
    router_init: str = "normal",
    router_std: float = 0.02,
    seed: int = 0,
    log=print,
    extra: dict | None = None,
) -> Path:
    """Write the BTX checkpoint of ``model`` from the dense ``branches`` (run directories).

    Args:
        model: the MoE model (experts, MoE layers) the checkpoint is for.
        branches: dense run directories (``checkpoints/latest`` inside), branch ``g`` at ``g``.
        out_dir: the checkpoint folder to create (an existing complete one is kept).
        padded_vocab: the padded vocabulary both models are built with.
        router_init, router_std, seed: the new routers' start (``base.router_*``, ``seed``).
        extra: more entries for ``merge.json`` (what the caller needs to know it is current).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: the model is dense, or a branch is not a dense model of the same shape.
    """
    from nemo_neko.config import load_run_config
    from nemo_neko.convert.importer import save_model_config
    from nemo_neko.convert.megatron_io import (
        ChunkIndex,
        meta_model,
        read_param,
        single_process_world,
        write_checkpoint,
    )
    from nemo_neko.model.checkpoint import Checkpointer

    out_dir = Path(out_dir)
    if (out_dir / "merge.json").exists():
        log(f"btx: {out_dir} (merged before)")
        return out_dir
    if not model.num_experts:
        raise ValueError("btx: the merged model must have experts")
    sources, dense = [], None
    for branch in branches:
        run = load_run_config(Path(branch) / "config.yaml")
        if run.model.num_experts:
            raise ValueError(f"btx: branch {branch} is not a dense model")
        if dense is not None and run.model != dense:
            raise ValueError(f"btx: branch {branch}'s model differs from {branches[0]}'s")
        dense = dense or run.model
        sources.append(Checkpointer(Path(branch) / "checkpoints").resolve_model_path())
    shape = ("hidden_size", "num_layers", "num_attention_heads", "num_query_groups")
    wrong = [k for k in shape if getattr(model, k) != getattr(dense, k)]
    if wrong or model.moe_ffn_hidden_size != dense.ffn_hidden_size:
        raise ValueError(
            f"btx: the MoE ({model.name}) is not the branches' model with experts: "
            f"{wrong or ['moe_ffn_hidden_size']} differ (experts must be as wide as the dense FFN)"
        )
    owner = expert_branches(model.num_experts, len(sources))
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cache: dict[str, list[torch.Tensor]] = {}

    with single_process_world(num_experts=model.num_experts, num_layers=model.num_layers) as par:
        moe_index = ChunkIndex(meta_model(model, padded_vocab, par))
        dense_index = ChunkIndex(meta_model(dense, padded_vocab, par))

        def branch_params(name: str) -> list[torch.Tensor]:
            """``name`` of every branch; the FFN pieces of one layer (fc1 and fc2, asked for by
            each expert in turn) stay cached together until another layer is asked for."""
            if name not in dense_index.shapes:
                raise ValueError(f"btx: the branches have no {name} (not the same base model)")
            if name not in cache:
                group = [name]
                ffn = _DENSE_FFN.fullmatch(name)
                if ffn is not None:
                    group = [
                        f"decoder.layers.{ffn.group(1)}.mlp.linear_fc{i}.weight" for i in (1, 2)
                    ]
                cache.clear()
                for member in group:
                    cache[member] = [read_param(dense_index, src, member) for src in sources]
            return cache[name]

        def produce(param: str, start: int, stop: int) -> torch.Tensor:
            expert = _EXPERT.fullmatch(param)
            if expert is not None:
                layer, e, leaf = expert.groups()
                weights = branch_params(f"decoder.layers.{layer}.mlp.{leaf}")
                return weights[owner[int(e)]][start:stop].clone()
            router = _ROUTER.fullmatch(param)
            if router is not None:
                shape = moe_index.shapes[param]
                if router_init == "zeros":
                    return torch.zeros(stop - start, *shape[1:], dtype=moe_index.dtype)
                gen = torch.Generator().manual_seed(seed * 1009 + int(router.group(1)))
                full = torch.randn(shape, generator=gen, dtype=torch.float32) * router_std
                return full[start:stop].to(moe_index.dtype)
            weights = branch_params(param)
            mean = torch.stack([w[start:stop].to(torch.float64) for w in weights]).mean(0)
            return mean.to(moe_index.dtype)

        log(f"btx: merging {len(sources)} branches into {model.num_experts} experts -> {out_dir}")
        write_checkpoint(moe_index, tmp, produce)
    save_model_config(model, tmp / "neko_model.yaml")
    record = {
        "branches": [str(b) for b in branches],
        "checkpoints": [str(s) for s in sources],
        "expert_branch": owner,
        "router_init": router_init,
        "router_std": router_std,
        "seed": seed,
        **(extra or {}),
    }
    (tmp / "merge.json").write_text(json.dumps(record, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
