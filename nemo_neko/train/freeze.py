"""Frozen parameters: what a fine-tuning run leaves as the pretrained model had it.

Three settings of ``train`` choose them, by *global* parameter names (the names of the whole
model on one process, ``decoder.layers.<global index>...``, whatever the pipeline split):

* ``freeze_embeddings``: the word embeddings (with tied embeddings, the output layer too);
* ``freeze_layers_below: N``: every parameter of layers ``0 .. N-1`` (attention, norms, MLP);
* ``freeze``: regular expressions, a parameter is frozen when one matches its name (``re.search``).

Frozen parameters keep ``requires_grad=False`` from before Megatron's DDP and optimizer are
built, so they get no gradient buffer and no optimizer state, and autograd stops at the lowest
trainable layer when everything below it is frozen (the backward pass never enters the frozen
stack). A pattern that freezes nothing anywhere in the world is an error (a typo would train
what was meant to stay).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the dry run reads ``frozen`` alone
    import torch

_LAYER = re.compile(r"decoder\.layers\.(\d+)\.")


def global_parameter_names(chunk) -> dict[str, torch.nn.Parameter]:
    """``chunk``'s parameters by global name (local layer indices replaced by global ones)."""
    layers = getattr(getattr(chunk, "decoder", None), "layers", [])
    numbers = {str(i): layer.layer_number - 1 for i, layer in enumerate(layers)}

    def rename(name: str) -> str:
        return _LAYER.sub(
            lambda m: f"decoder.layers.{numbers.get(m.group(1), m.group(1))}.", name, 1
        )

    return {rename(name): p for name, p in chunk.named_parameters()}


def frozen(name: str, train) -> str | None:
    """Which setting freezes parameter ``name`` (None: it trains)."""
    if train.freeze_embeddings and name.startswith("embedding.word_embeddings."):
        return "freeze_embeddings"
    match = _LAYER.match(name)
    if match and int(match.group(1)) < train.freeze_layers_below:
        return "freeze_layers_below"
    for pattern in train.freeze:
        if re.search(pattern, name):
            return pattern
    return None


def _tied_output_copy(name: str, param) -> bool:
    """The last pipeline stage's copy of tied word embeddings (Megatron marks it
    ``shared_embedding`` and keeps it equal to the first stage's by summing their gradients)."""
    return name.startswith("output_layer.") and getattr(param, "shared_embedding", False)


def freeze_parameters(chunks, train) -> dict[str, int]:
    """Set ``requires_grad=False`` on the frozen parameters of ``chunks`` (collective when a
    world exists). Returns ``{"frozen": n, "trainable": n}`` parameter *elements* on this rank.

    Raises:
        ValueError: a ``train.freeze`` pattern, or ``freeze_layers_below``, freezes nothing on
            any rank; or nothing is left to train.
    """
    import torch
    import torch.distributed as dist

    counts = {"frozen": 0, "trainable": 0}
    used: dict[str, int] = {p: 0 for p in train.freeze}
    used["freeze_layers_below"] = 0
    for chunk in chunks:
        for name, param in global_parameter_names(chunk).items():
            reason = frozen(name, train)
            if reason is None and train.freeze_embeddings and _tied_output_copy(name, param):
                reason = "freeze_embeddings"
            if reason is None:
                counts["trainable"] += param.numel()
                continue
            param.requires_grad_(False)
            counts["frozen"] += param.numel()
            used[reason] = used.get(reason, 0) + 1
    keys = list(used)
    totals = torch.tensor([used[k] for k in keys] + [counts["trainable"]], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(totals)
    unused = [k for k, n in zip(keys, totals.tolist()) if n == 0 and k in train.freeze]
    if train.freeze_layers_below and totals[keys.index("freeze_layers_below")] == 0:
        unused.append(f"freeze_layers_below={train.freeze_layers_below}")
    if unused:
        raise ValueError(
            f"train.freeze: {unused} freeze no parameter (names look like "
            f"'decoder.layers.3.self_attention.linear_qkv.weight')"
        )
    if totals[-1] == 0:
        raise ValueError("train.freeze*: every parameter is frozen, nothing would train")
    return counts
