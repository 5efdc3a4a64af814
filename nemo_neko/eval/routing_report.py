"""The routing part of the report: which experts each held-out set chose at inference.

Reads ``routing.json`` (written by ``correct``, :mod:`nemo_neko.inference.routing`) and renders,
summed over the MoE layers, an expert x dataset table of shares: the share of each dataset's
routed (token, expert) pairs that each expert received (a row sums to 100 %); the expert each
dataset was tied to in training; the share of its pairs on that expert (chance is 1 / E); and per
layer that share's mean over the datasets that had an expert. The PNG is a heatmap of the same
table with the training experts outlined.

Shapes: D datasets, E experts, L MoE layers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from nemo_neko.eval.render import markdown_table, text_table


@dataclass
class RoutingSummary:
    """The routing figures, ready to print."""

    datasets: list[str]
    experts: int
    shares_DE: list[list[float]]
    """Per dataset, the share (%) of its routed pairs each expert received, all layers."""
    training_expert: dict[str, int | None]
    on_training_expert: dict[str, float | None]
    """Per dataset, the share (%) of its pairs on its training expert (None: it had none)."""
    per_layer: dict[str, float | None]
    """Per MoE layer, the mean over datasets of the share on the training expert (%)."""
    records: dict[str, int]
    """Per dataset, the records whose prompts were counted."""

    def to_dict(self) -> dict:
        return dict(vars(self))


def load_routing(path: str | os.PathLike) -> RoutingSummary:
    """Summarise a ``routing.json`` (raises ``ValueError`` naming the file when it is not one)."""
    try:
        figures = json.loads(open(path, encoding="utf-8").read())
        datasets, experts = figures["datasets"], int(figures["experts"])
        counts = {layer: table for layer, table in figures["counts"].items()}
        training = figures.get("training_expert", {})
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a routing.json of the correct stage ({err})") from None
    total_DE = [[0.0] * experts for _ in datasets]
    per_layer = {}
    for layer, table in counts.items():
        on_expert = []
        for d, row in enumerate(table):
            for e, value in enumerate(row):
                total_DE[d][e] += value
            expert = training.get(datasets[d])
            if expert is not None and sum(row):
                on_expert.append(100 * row[expert] / sum(row))
        per_layer[layer] = sum(on_expert) / len(on_expert) if on_expert else None
    shares = [[100 * v / sum(row) if sum(row) else 0.0 for v in row] for row in total_DE]
    on_training = {
        name: (shares[d][training[name]] if training.get(name) is not None else None)
        for d, name in enumerate(datasets)
    }
    return RoutingSummary(
        datasets=datasets,
        experts=experts,
        shares_DE=shares,
        training_expert={name: training.get(name) for name in datasets},
        on_training_expert=on_training,
        per_layer=per_layer,
        records={name: int(figures.get("records", {}).get(name, 0)) for name in datasets},
    )


def _rows(summary: RoutingSummary):
    headers = [
        "dataset",
        "train. expert",
        *[f"e{e}" for e in range(summary.experts)],
        "on its expert %",
    ]
    rows = []
    for d, name in enumerate(summary.datasets):
        expert = summary.training_expert[name]
        cells = [
            f"{v:.1f}" + ("*" if e == expert else "") for e, v in enumerate(summary.shares_DE[d])
        ]
        share = summary.on_training_expert[name]
        rows.append(
            [
                name,
                "-" if expert is None else expert,
                *cells,
                "-" if share is None else f"{share:.1f}",
            ]
        )
    return headers, rows


def _notes(summary: RoutingSummary) -> list[str]:
    chance = 100 / summary.experts
    layers = ", ".join(
        f"{layer}: {'-' if v is None else f'{v:.1f}'}" for layer, v in summary.per_layer.items()
    )
    counted = sorted(set(summary.records.values()))
    records = (
        f"{counted[0]} records" if len(counted) == 1 else f"{counted[0]}-{counted[-1]} records"
    )
    return [
        f"prompt tokens of {records} per held-out set (the prefill), plain top-k routing (no task "
        f"ids), summed over the MoE layers; * = the dataset's expert in training; chance share of "
        f"one expert {chance:.1f} %",
        f"share on the training expert per MoE layer (mean over datasets): {layers}",
    ]


def routing_text(summary: RoutingSummary) -> str:
    headers, rows = _rows(summary)
    lines = ["routing at inference: share (%) of each held-out set's routed tokens per expert", ""]
    return "\n".join(
        lines + [text_table(headers, rows), ""] + [f"  - {n}" for n in _notes(summary)]
    )


def routing_markdown(summary: RoutingSummary) -> str:
    headers, rows = _rows(summary)
    parts = ["## Routing at inference", "", markdown_table(headers, rows), ""]
    return "\n".join(parts + [f"- {n}" for n in _notes(summary)]) + "\n"


def write_heatmap(summary: RoutingSummary, path: str | os.PathLike) -> None:
    """An expert x dataset heatmap of the shares, training experts outlined (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(1.0 + 0.6 * summary.experts, 1.2 + 0.45 * len(summary.datasets)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(summary.shares_DE, cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(summary.experts), [f"e{e}" for e in range(summary.experts)])
    ax.set_yticks(range(len(summary.datasets)), summary.datasets)
    for d, name in enumerate(summary.datasets):
        expert = summary.training_expert[name]
        if expert is not None:
            ax.add_patch(Rectangle((expert - 0.5, d - 0.5), 1, 1, fill=False, color="red", lw=2))
        for e, value in enumerate(summary.shares_DE[d]):
            ax.text(e, d, f"{value:.0f}", ha="center", va="center", fontsize=7, color="white")
    ax.set_title(
        "inference routing: % of each set's tokens per expert (red: training expert)", fontsize=8
    )
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
