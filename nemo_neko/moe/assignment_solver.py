"""A learned f(T): the dataset -> expert mapping that best fits the gate's own preferences.

Given an affinity matrix ``A[d, e]`` (e.g. the share of dataset ``d``'s tokens the router's
gate sends to expert ``e`` during a short warm-up without forcing, :func:`affinity_from_counts`),
:func:`solve_assignment` returns the mapping maximising ``sum_d A[d, f(d)]`` under balance:

* ``D <= E``: every expert takes at most one dataset (a rectangular assignment problem);
* ``D > E``: every expert takes ``floor(D / E)`` or ``ceil(D / E)`` datasets. Each expert is
  expanded into ``ceil(D / E)`` capacity slots, ``floor(D / E)`` of them mandatory; ``E - D % E``
  dummy rows (affinity 0, allowed only on the optional slots) make the problem square, so exactly
  ``D % E`` experts take the extra dataset.

Both are solved exactly by the Hungarian algorithm (shortest augmenting paths with potentials,
``O(n^3)`` for ``n = E * ceil(D / E)`` slots; pure python, no scipy: 8 experts and 30 datasets
take well under a second, 64 x 64 a few seconds with the tie-breaking). Ties are broken
deterministically: among the optimal mappings the lexicographically smallest expert vector
(dataset 0's expert as small as possible, then dataset 1's, ...), with optimal meaning within
``TOLERANCE`` (relative) of the best total, so float noise in the warm-up's shares cannot flip
a mapping between two runs of the same seed.

Shapes: D datasets, E experts, L MoE layers, n slots. Pure python; torch is never imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

TOLERANCE = 1e-9
"""Relative slack of "optimal" in the tie-breaking (``|total| * TOLERANCE``, at least that)."""

_FORBIDDEN = math.inf


def balanced_capacities(num_datasets: int, num_experts: int) -> tuple[int, int]:
    """``(floor, ceil)`` of the datasets per expert the balance allows (``(0, 1)`` if D <= E)."""
    if num_experts < 1:
        raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    low = num_datasets // num_experts
    return low, low + (1 if num_datasets % num_experts else 0)


def assignment_total(affinity_DE: Sequence[Sequence[float]], experts: Sequence[int]) -> float:
    """``sum_d affinity_DE[d][experts[d]]``: the objective :func:`solve_assignment` maximises."""
    return math.fsum(affinity_DE[d][e] for d, e in enumerate(experts))


def solve_assignment(affinity_DE: Sequence[Sequence[float]]) -> list[int]:
    """Expert of each dataset (``result[d]``) maximising the total affinity under balance.

    Args:
        affinity_DE: ``[D][E]`` finite, non-negative affinities (validated by
            :func:`check_affinity`).

    Returns:
        ``[D]`` expert indices; each expert takes at most one dataset when D <= E, else
        ``floor(D / E)`` or ``ceil(D / E)`` of them. Ties: lexicographically smallest vector.
    """
    rows = [list(row) for row in affinity_DE]
    if not rows or not rows[0]:
        raise ValueError("assignment solver: the affinity matrix is empty")
    experts = len(rows[0])
    check_affinity(rows, len(rows), experts)
    rows = [[float(v) for v in row] for row in rows]
    problem = _SlotProblem(rows, experts)
    best, experts_D = problem.solve({})
    slack = TOLERANCE * max(1.0, abs(best))
    fixed: dict[int, int] = {}
    for d in range(len(rows)):
        for e in range(experts_D[d]):  # a smaller expert for d that keeps the total optimal?
            value, candidate = problem.solve({**fixed, d: e})
            if candidate is not None and value >= best - slack:
                experts_D = candidate
                break
        fixed[d] = experts_D[d]
    return experts_D


def check_affinity(affinity_DE, num_datasets: int, num_experts: int, where: str = "") -> None:
    """Raise one-line ``ValueError``: not ``[num_datasets][num_experts]``, non-numeric, NaN,
    infinite or negative entries. ``where`` prefixes the message (e.g. the file name)."""
    prefix = f"{where}: " if where else ""
    if not isinstance(affinity_DE, Sequence) or isinstance(affinity_DE, str):
        raise ValueError(f"{prefix}affinity must be a [datasets][experts] list of lists")
    if len(affinity_DE) != num_datasets:
        raise ValueError(
            f"{prefix}affinity has {len(affinity_DE)} rows, expected one per dataset "
            f"({num_datasets})"
        )
    for d, row in enumerate(affinity_DE):
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != num_experts:
            size = len(row) if isinstance(row, Sequence) else type(row).__name__
            raise ValueError(
                f"{prefix}affinity row {d} has {size} entries, expected one per expert "
                f"({num_experts})"
            )
        for e, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{prefix}affinity[{d}][{e}] is not a number: {value!r}")
            if math.isnan(value) or math.isinf(value):
                raise ValueError(f"{prefix}affinity[{d}][{e}] is {value} (must be finite)")
            if value < 0:
                raise ValueError(f"{prefix}affinity[{d}][{e}] is negative ({value})")


def affinity_from_counts(counts_DLE: Sequence[Sequence[Sequence[float]]]) -> list[list[float]]:
    """Affinity ``[D][E]``: each dataset's counts normalised per layer, averaged over layers.

    Args:
        counts_DLE: ``[D][L][E]`` routed (token, expert) pairs of each dataset per MoE layer, as
            :class:`~nemo_neko.inference.routing.RoutingCounter` gives per record (summed over a
            dataset's records) or :func:`counts_from_figures` reads from a ``routing.json``.

    Returns:
        ``[D][E]`` shares in [0, 1], each row summing to 1.

    Raises:
        ValueError: ragged counts, negative counts, or a dataset with no routed token.
    """
    affinity = []
    for d, layers in enumerate(counts_DLE):
        shares_E = None
        for layer, row in enumerate(layers):
            if shares_E is None:
                shares_E = [0.0] * len(row)
            if len(row) != len(shares_E) or any(v < 0 for v in row):
                raise ValueError(f"routing counts of dataset {d}, layer {layer}: {list(row)}")
            total = sum(row)
            if not total:
                raise ValueError(f"routing counts: dataset {d} has no routed token (layer {layer})")
            shares_E = [s + v / total for s, v in zip(shares_E, row)]
        if not shares_E:
            raise ValueError(f"routing counts: dataset {d} has no MoE layer")
        affinity.append([s / len(layers) for s in shares_E])
    if len({len(row) for row in affinity}) > 1:
        raise ValueError("routing counts: datasets disagree on the number of experts")
    return affinity


def counts_from_figures(figures: Mapping) -> list[list[list[int]]]:
    """``[D][L][E]`` counts of a ``routing.json`` (``{"counts": {layer: [D][E]}}``, datasets in
    ``figures["datasets"]`` order, layers in ``figures["layers"]`` order)."""
    layers = [str(layer) for layer in figures["layers"]]
    return [
        [list(figures["counts"][layer][d]) for layer in layers]
        for d in range(len(figures["datasets"]))
    ]


def counts_from_stats(tables: Mapping, num_tasks: int) -> list[list[list[int]]]:
    """``[D][L][E]`` gate-chosen counts per task from training-time routing statistics.

    Args:
        tables: ``{layer: [E, S, 2]}`` as :func:`~nemo_neko.moe.stats.collect_routing_stats`
            returns (tensors, or nested lists); slot ``1 + t`` is task ``t``, column 0 the gate.
        num_tasks: D; task ``t`` becomes dataset row ``t``.

    Only the gate's choices count: a forced pair says nothing about the gate's preference.
    """
    out: list[list[list[int]]] = [[] for _ in range(num_tasks)]
    for layer in sorted(tables):
        table = tables[layer]
        table = table.tolist() if hasattr(table, "tolist") else table
        for t in range(num_tasks):
            out[t].append([int(per_expert[1 + t][0]) for per_expert in table])
    return out


def affinity_document(datasets: Sequence[str], affinity_DE: Sequence[Sequence[float]]) -> dict:
    """The affinity file's content: ``{"datasets": [...], "experts": E, "affinity": [D][E]}``."""
    return {
        "datasets": list(datasets),
        "experts": len(affinity_DE[0]) if affinity_DE else 0,
        "affinity": [list(row) for row in affinity_DE],
    }


class _SlotProblem:
    """The square slot-expanded cost matrix of :func:`solve_assignment`, re-solvable with some
    datasets fixed to experts (the tie-breaking)."""

    def __init__(self, affinity_DE: list[list[float]], num_experts: int):
        self.affinity = affinity_DE
        self.num_datasets = len(affinity_DE)
        self.num_experts = num_experts
        low, high = balanced_capacities(self.num_datasets, num_experts)
        self.slot_expert = [e for e in range(num_experts) for _ in range(high)]  # [n]
        self.mandatory = [k < low for e in range(num_experts) for k in range(high)]
        self.dummies = len(self.slot_expert) - self.num_datasets

    def solve(self, fixed: dict[int, int]) -> tuple[float, list[int] | None]:
        """``(total affinity, [D] experts)`` of the best mapping with ``fixed`` datasets on
        their experts; ``(-inf, None)`` when the fixes leave no balanced mapping."""
        cost = []
        for d, row in enumerate(self.affinity):
            only = fixed.get(d)
            cost.append(
                [-row[e] if only is None or e == only else _FORBIDDEN for e in self.slot_expert]
            )
        for _ in range(self.dummies):
            cost.append([_FORBIDDEN if m else 0.0 for m in self.mandatory])
        slot_of_row = hungarian(cost)
        if slot_of_row is None:
            return -math.inf, None
        experts_D = [self.slot_expert[slot_of_row[d]] for d in range(self.num_datasets)]
        return assignment_total(self.affinity, experts_D), experts_D


def hungarian(cost_NN: list[list[float]]) -> list[int] | None:
    """Minimum-cost perfect matching of a square ``[n][n]`` cost matrix (``inf`` = forbidden).

    Shortest augmenting paths with row/column potentials, ``O(n^3)``; deterministic (the first
    column wins a tie). Returns the column of each row, or None when no finite matching exists.
    """
    n = len(cost_NN)
    u, v = [0.0] * (n + 1), [0.0] * (n + 1)  # potentials; index 0 is the virtual start
    match = [0] * (n + 1)  # match[j] = row (1-based) holding column j, 0 = free
    way = [0] * (n + 1)
    for i in range(1, n + 1):
        match[0], j0 = i, 0
        minv, used = [math.inf] * (n + 1), [False] * (n + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = match[j0], math.inf, -1
            row = cost_NN[i0 - 1]
            for j in range(1, n + 1):
                if used[j]:
                    continue
                reduced = row[j - 1] - u[i0] - v[j]
                if reduced < minv[j]:
                    minv[j], way[j] = reduced, j0
                if minv[j] < delta:
                    delta, j1 = minv[j], j
            if j1 < 0 or math.isinf(delta):
                return None
            for j in range(n + 1):
                if used[j]:
                    u[match[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:  # flip the augmenting path
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    column = [0] * n
    for j in range(1, n + 1):
        column[match[j] - 1] = j - 1
    return column
