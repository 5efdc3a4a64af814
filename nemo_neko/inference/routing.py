"""Inference routing per record and per dataset: which experts the prompts choose, no task ids.

While ``correct`` decodes, every batch's prompts run through the model once (the prefill of the
KV cache) with each row labelled by its slot in the batch: in eval mode the labels change nothing
in routing (plain top-k, no forcing), but the NeKo dispatchers count, on the rank owning each
expert, the tokens each label sends to each expert (:mod:`nemo_neko.moe.stats`).
:class:`RoutingCounter` gives every MoE layer a counter for the duration and hands back, per
record, its ``[L][E]`` table; ``correct`` stores it in the record's prediction line, so the
figures of a resumed run are exactly those of the predictions on disk. :func:`routing_figures`
sums them per dataset into ``routing.json``, with the training-time assignment::

    {"datasets": [...], "experts": E, "layers": [layer numbers],
     "counts": {layer: [[prompt tokens of dataset d on expert e] per d]},   # [D][E] per layer
     "training_expert": {dataset: expert or null}, "records": {dataset: n}}

Over many ranks (:mod:`.sharding`), every rank of a model replica runs the same batch, and the
counts are summed over the expert-parallel group (each rank holds the rows of its own experts).
Each token is then seen once per rank of the replica: with EP, every EP rank dispatches its own
copy of the batch to the experts' owners; with TP and no sequence parallelism, the dispatcher
gathers every TP rank's (identical) tokens. The sum holds ``TP x EP`` copies of the one-process
counts and is divided by that (``copies``), so a record's figures do not depend on the layout.

Shapes: D datasets, E experts, L MoE layers; each prompt token adds top_k to its layer's row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class RoutingCounter:
    """Counts, per MoE layer, the tokens each of ``slots`` labels sends to each expert.

    Use as a context manager around the forwards whose task-id scope labels each row with its
    slot (``KVCacheDecoder.generate(labels=range(n), num_labels=slots)``); :meth:`take` reads
    and resets the counts; the layers' own counters come back on exit.
    """

    def __init__(self, model, slots: int, group=None, copies: int = 1):
        """``group``: the expert-parallel group the counts are summed over (None: one rank);
        ``copies``: how many times the sum counts each token (``TP x EP``; module docstring)."""
        from nemo_neko.moe.layer import NeKoMoELayer

        self.slots = slots
        self.group = group
        self.copies = copies
        self.layers = [m for m in model.modules() if isinstance(m, NeKoMoELayer)]
        self.experts = self.layers[0].config.num_moe_experts if self.layers else 0
        self.numbers = [layer.layer_number for layer in self.layers]
        self._saved: list = []

    def __enter__(self) -> RoutingCounter:
        from nemo_neko.moe.stats import RoutingStats

        self._saved = [(layer, layer.routing_stats) for layer in self.layers]
        for layer in self.layers:
            stats = RoutingStats(self.experts, self.slots + 1)
            layer.routing_stats = stats
            layer.token_dispatcher.routing_stats = stats
        return self

    def take(self, n: int) -> list[list[list[int]]]:
        """Per slot ``0..n-1``, its ``[L][E]`` token counts since the last call (then zeroed).

        Collective over ``group`` (every rank of a model replica calls it after each chunk)."""
        from nemo_neko.moe.stats import collect_routing_stats

        tables = collect_routing_stats(self.layers, self.group)  # {layer: [E, slots + 1, 2]}
        ordered = [tables[number].sum(dim=2) for number in self.numbers]  # [E, slots + 1]
        if self.copies > 1:  # rounded: copies of one token could differ only by float noise
            ordered = [
                (t + self.copies // 2).div(self.copies, rounding_mode="floor") for t in ordered
            ]
        return [[table[:, slot + 1].tolist() for table in ordered] for slot in range(n)]

    def __exit__(self, *exc) -> None:
        for layer, stats in self._saved:
            layer.routing_stats = stats
            layer.token_dispatcher.routing_stats = stats


def routing_figures(
    lines: list[tuple[str, list[list[int]]]],
    datasets: list[str],
    layers: list[int],
    experts: int,
    training_expert: dict,
) -> dict:
    """``routing.json``'s content (module docstring) from ``(dataset, [L][E] counts)`` pairs."""
    counts = {str(number): [[0] * experts for _ in datasets] for number in layers}
    records = {d: 0 for d in datasets}
    for dataset, table in lines:
        d = datasets.index(dataset)
        records[dataset] += 1
        for number, row in zip(layers, table):
            counts[str(number)][d] = [a + b for a, b in zip(counts[str(number)][d], row)]
    return {
        "datasets": datasets,
        "experts": experts,
        "layers": layers,
        "counts": counts,
        "training_expert": {d: training_expert.get(d) for d in datasets},
        "records": records,
    }


def write_routing(path: str | os.PathLike, figures: dict) -> Path:
    """Write ``routing.json`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(figures, indent=1) + "\n")
    os.replace(tmp, path)
    return path
