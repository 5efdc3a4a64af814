"""Did the experts specialise? Inference routing read against the training assignment.

From a run's inference routing summary (``predictions.routing.json``, written by ``correct``:
:func:`nemo_neko.inference.routing.routing_figures`; ``counts[layer][d][e]`` = routed
(prompt token, expert) pairs, each token adding ``top_k``) and the run's training assignment
(``run.task_routing()``: dataset -> expert f(T)), per MoE layer:

* **on its expert**: for each held-out set also seen in training, the share of its tokens whose
  top-k includes its training expert, ``top_k * counts[d][f(d)] / sum_e counts[d][e]``
  (chance: ``top_k / E``, the router ignoring the dataset);
* **specialisation**: the mean over those sets of (on its expert - chance), and the normalised
  mutual information between dataset and expert over their routed pairs,
  ``NMI = I(D; E) / ((H(D) + H(E)) / 2)`` (0: the expert says nothing about the dataset,
  1: each dataset has experts of its own; sets weighted by their routed pairs);
* **zero-shot**: for each held-out set not in training, the share of its routed pairs on each
  expert, labelled with the training datasets tied to it (which training tasks' experts it falls
  on), and the share on experts tied to any training dataset (chance: tied experts / E).

``mean`` rows and ``all`` columns are means over the MoE layers. Text table, markdown, JSON.
Run it as::

    python -m nemo_neko.eval routing runs/neko-tiny [--routing FILE] [--json a.json] \\
        [--markdown a.md]

Shapes: D held-out sets, E experts, L MoE layers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nemo_neko.eval.render import markdown_table, text_table

MEAN = "mean"
"""Key of the means over the MoE layers (beside the layer numbers)."""


@dataclass
class RoutingAnalysis:
    """Specialisation figures of one run's inference routing (module docstring)."""

    datasets: list[str]
    """The held-out sets of the routing summary, in its order."""
    experts: int
    top_k: int
    layers: list[str]
    """MoE layer numbers (as the summary's ``counts`` keys)."""
    training: dict[str, int]
    """The whole training assignment, dataset -> expert (sets not held out included)."""
    seen: list[str]
    """Held-out sets with a training expert."""
    zero_shot: list[str]
    """Held-out sets not in training."""
    on_expert: dict[str, dict[str, float | None]]
    """Per seen set, per layer (and ``mean``), the share of its tokens on its training expert
    (None: no routed token)."""
    specialisation: dict[str, dict[str, float | None]]
    """Per layer (and ``mean``): ``share_over_chance`` (mean over seen sets of on-expert minus
    chance) and ``nmi`` (None: fewer than two seen sets with tokens)."""
    zero_shot_shares: dict[str, dict[str, list[float] | None]]
    """Per zero-shot set, per layer (and ``mean``), ``[E]`` shares of its routed pairs."""
    on_tied_experts: dict[str, float | None]
    """Per zero-shot set, the share of its routed pairs on experts tied to a training dataset
    (mean over layers)."""

    @property
    def chance(self) -> float:
        """Share of a set's tokens on one given expert when routing ignores the set."""
        return self.top_k / self.experts

    @property
    def tied_chance(self) -> float:
        """Share of routed pairs on tied experts when routing ignores the set."""
        return len(set(self.training.values())) / self.experts

    def datasets_of(self, expert: int) -> list[str]:
        """The training datasets tied to ``expert``."""
        return [name for name, e in self.training.items() if e == expert]

    def to_dict(self) -> dict:
        return {**vars(self), "chance": self.chance, "tied_chance": self.tied_chance}


def analyse_routing(
    figures: Mapping, training: Mapping[str, int], top_k: int, where: str = "routing.json"
) -> RoutingAnalysis:
    """The analysis of a routing summary's ``figures`` against the training assignment.

    Args:
        figures: ``routing.json``'s content (``datasets``, ``experts``, ``layers``,
            ``counts: {layer: [D][E]}``, ``training_expert``).
        training: dataset -> expert of training (``zip(task_names, task_to_expert)``).
        top_k: experts per token at inference (``model.moe_router_topk``).
        where: names the summary in errors.

    Raises:
        ValueError: not a routing summary, ``top_k`` outside ``[1, E]``, an expert outside
            ``[0, E)``, or a summary written for another assignment than ``training``.
    """
    try:
        datasets = list(figures["datasets"])
        experts = int(figures["experts"])
        layers = [str(layer) for layer in figures["layers"]]
        counts = {layer: figures["counts"][layer] for layer in layers}
        recorded = dict(figures.get("training_expert") or {})
        for table in counts.values():
            if len(table) != len(datasets) or any(len(row) != experts for row in table):
                raise ValueError("counts are not [datasets][experts] per layer")
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: not a routing summary of the correct stage ({err})") from None
    if not 1 <= top_k <= experts:
        raise ValueError(f"top_k={top_k} must be in [1, experts={experts}]")
    training = {name: int(e) for name, e in training.items()}
    for name, expert in training.items():
        if not 0 <= expert < experts:
            raise ValueError(
                f"training dataset {name!r} -> expert {expert}, outside [0, {experts})"
            )
    for name, expert in recorded.items():
        if expert is not None and training.get(name) != expert:
            raise ValueError(
                f"{where} was written for another assignment: {name!r} -> expert {expert} "
                f"there, {training.get(name)} in the run"
            )
    seen = [name for name in datasets if name in training]
    zero_shot = [name for name in datasets if name not in training]
    chance = top_k / experts
    tied = {e for e in training.values()}

    on_expert: dict[str, dict[str, float | None]] = {name: {} for name in seen}
    specialisation: dict[str, dict[str, float | None]] = {}
    zero_shot_shares: dict[str, dict[str, list[float] | None]] = {name: {} for name in zero_shot}
    for layer in layers:
        table = counts[layer]
        rows = {name: table[d] for d, name in enumerate(datasets)}
        for name in seen:
            total = sum(rows[name])
            on_expert[name][layer] = top_k * rows[name][training[name]] / total if total else None
        for name in zero_shot:
            total = sum(rows[name])
            zero_shot_shares[name][layer] = [v / total for v in rows[name]] if total else None
        over = [
            on_expert[name][layer] - chance for name in seen if on_expert[name][layer] is not None
        ]
        specialisation[layer] = {
            "share_over_chance": sum(over) / len(over) if over else None,
            "nmi": normalised_mutual_information([rows[name] for name in seen]),
        }
    for name in seen:
        on_expert[name][MEAN] = _mean(on_expert[name].values())
    for name in zero_shot:
        per_layer = [s for s in zero_shot_shares[name].values() if s is not None]
        zero_shot_shares[name][MEAN] = (
            [sum(col) / len(per_layer) for col in zip(*per_layer)] if per_layer else None
        )
    specialisation[MEAN] = {
        key: _mean(specialisation[layer][key] for layer in layers)
        for key in ("share_over_chance", "nmi")
    }
    on_tied = {
        name: (
            None
            if zero_shot_shares[name][MEAN] is None
            else sum(zero_shot_shares[name][MEAN][e] for e in tied)
        )
        for name in zero_shot
    }
    return RoutingAnalysis(
        datasets=datasets,
        experts=experts,
        top_k=top_k,
        layers=layers,
        training=training,
        seen=seen,
        zero_shot=zero_shot,
        on_expert=on_expert,
        specialisation=specialisation,
        zero_shot_shares=zero_shot_shares,
        on_tied_experts=on_tied,
    )


def normalised_mutual_information(counts_DE: Sequence[Sequence[float]]) -> float | None:
    """``I(D; E) / ((H(D) + H(E)) / 2)`` of the joint distribution ``counts_DE / sum`` (nats
    cancel). None when fewer than two datasets have counts; 0 when all go to one expert."""
    rows = [list(row) for row in counts_DE if sum(row) > 0]
    if len(rows) < 2:
        return None
    total = sum(sum(row) for row in rows)
    p_D = [sum(row) / total for row in rows]
    p_E = [sum(col) / total for col in zip(*rows)]
    mutual = 0.0
    for d, row in enumerate(rows):
        for e, value in enumerate(row):
            if value:
                p = value / total
                mutual += p * math.log(p / (p_D[d] * p_E[e]))
    h_D, h_E = _entropy(p_D), _entropy(p_E)
    if h_E == 0:
        return 0.0
    return max(0.0, mutual / ((h_D + h_E) / 2))


def load_analysis(
    path: str | os.PathLike, training: Mapping[str, int], top_k: int
) -> RoutingAnalysis:
    """:func:`analyse_routing` of the routing summary at ``path``."""
    try:
        figures = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the routing summary ({err})") from None
    return analyse_routing(figures, training, top_k, where=str(path))


def analyse_run(run_dir: str | os.PathLike, routing: str | os.PathLike | None = None):
    """The analysis of a run's ``predictions.routing.json`` (or ``routing``) against its
    training assignment and top-k (read from ``<run_dir>/config.yaml``)."""
    from nemo_neko.config import load_run_config
    from nemo_neko.paths import RunPaths

    paths = RunPaths(run_dir)
    run = load_run_config(paths.config)
    if not run.model.num_experts:
        raise ValueError(f"{run_dir}: a dense model has no routing to analyse")
    assignment = run.task_routing()
    path = routing or paths.routing
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no routing summary (run the correct stage first)")
    return load_analysis(
        path, dict(zip(assignment.task_names, assignment.task_to_expert)), run.model.moe_router_topk
    )


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _entropy(p) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _tables(analysis: RoutingAnalysis) -> list[tuple[str, list[str], list[list], list[str]]]:
    """``(title, headers, rows, notes)`` of each table."""
    columns = [*analysis.layers, MEAN]
    layer_headers = [f"L{layer}" for layer in analysis.layers] + ["all"]
    tables = []
    if analysis.seen:
        rows = [
            [name, analysis.training[name], *(_pct(analysis.on_expert[name][c]) for c in columns)]
            for name in analysis.seen
        ]
        tables.append(
            (
                "share (%) of each seen set's tokens routed to its training expert, per MoE layer",
                ["dataset", "train. expert", *layer_headers],
                rows,
                [
                    f"chance {100 * analysis.chance:.1f} % (top_k / E = {analysis.top_k} / "
                    f"{analysis.experts})"
                ],
            )
        )
    rows = []
    for c, header in zip(columns, layer_headers):
        figures = analysis.specialisation[c]
        over, nmi = figures["share_over_chance"], figures["nmi"]
        rows.append(
            [
                header,
                "-" if over is None else f"{100 * over:+.1f}",
                "-" if nmi is None else f"{nmi:.3f}",
            ]
        )
    tables.append(
        (
            "specialisation per MoE layer (seen sets)",
            ["layer", "on expert - chance (pts)", "NMI(dataset; expert)"],
            rows,
            ["NMI: 0 = the expert says nothing about the dataset, 1 = experts of their own"],
        )
    )
    if analysis.zero_shot:
        expert_headers = [f"e{e}" for e in range(analysis.experts)]
        rows = []
        for name in analysis.zero_shot:
            shares = analysis.zero_shot_shares[name][MEAN]
            if shares is None:
                rows.append([name, *["-"] * analysis.experts, "-", "-"])
                continue
            top = max(range(analysis.experts), key=lambda e: (shares[e], -e))
            tied = ", ".join(analysis.datasets_of(top)) or "untied"
            rows.append(
                [
                    name,
                    *(_pct(v) for v in shares),
                    _pct(analysis.on_tied_experts[name]),
                    f"e{top} ({tied})",
                ]
            )
        legend = "; ".join(
            f"e{e}: {', '.join(analysis.datasets_of(e)) or '-'}" for e in range(analysis.experts)
        )
        tables.append(
            (
                "zero-shot sets: share (%) of routed pairs per expert (mean over MoE layers)",
                ["dataset", *expert_headers, "on tied %", "top expert (training sets)"],
                rows,
                [
                    f"training sets per expert: {legend}",
                    f"chance per expert {100 / analysis.experts:.1f} %, on tied experts "
                    f"{100 * analysis.tied_chance:.1f} %",
                ],
            )
        )
    return tables


def analysis_text(analysis: RoutingAnalysis) -> str:
    """The tables for a terminal."""
    parts = ["routing specialisation at inference (prompt tokens, plain top-k, no task ids)"]
    for title, headers, rows, notes in _tables(analysis):
        parts += ["", title, text_table(headers, rows), *(f"  - {n}" for n in notes)]
    return "\n".join(parts)


def analysis_markdown(analysis: RoutingAnalysis) -> str:
    """The tables as a markdown section."""
    parts = ["## Routing specialisation at inference"]
    for title, headers, rows, notes in _tables(analysis):
        parts += ["", f"**{title}**", "", markdown_table(headers, rows), ""]
        parts += [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"
