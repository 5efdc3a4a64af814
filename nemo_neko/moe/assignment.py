"""Which expert each training dataset is tied to: the f(T) of NeKo's task-guided routing.

Two modes:

* ``random`` (the paper's choice): a seeded shuffle of the experts, dealt to the datasets in
  the order they are listed. With no more datasets than experts every dataset gets its own
  expert; with more, the deal wraps around with a fresh shuffle per round, so that no expert
  carries more than ``ceil(datasets / experts)`` datasets (many datasets to one expert).
* ``explicit``: a ``{dataset: expert}`` mapping that must name every dataset, and nothing else.
* ``learned``: the mapping maximising the total dataset -> expert ``affinity`` (e.g. the share of
  each dataset's tokens the gate sent to each expert in a warm-up) under the same balance as
  ``random`` (one dataset per expert at most, or ``floor``/``ceil(datasets / experts)`` each):
  :mod:`nemo_neko.moe.assignment_solver`. ``affinity`` is a JSON file
  (``{"datasets": [...], "experts": E, "affinity": [[...] per dataset]}``), that document inline,
  or a bare ``[datasets][experts]`` matrix in the order of the datasets.

Task ids are positions in the dataset list: dataset ``datasets[i]`` is task ``i``.
Every error is raised here, at configuration time, before any model is built.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class AssignmentMode(StrEnum):
    """How datasets are dealt to experts (``routing.assignment.mode``)."""

    random = "random"
    """A seeded shuffle of the experts, dealt in dataset order (the paper's choice)."""
    explicit = "explicit"
    """``mapping`` names each dataset's expert."""
    learned = "learned"
    """The balanced mapping of maximal total ``affinity`` (:mod:`.assignment_solver`)."""


ASSIGNMENT_MODES = tuple(m.value for m in AssignmentMode)


@dataclass
class TaskAssignmentConfig:
    """How datasets are mapped to experts."""

    mode: AssignmentMode = AssignmentMode.random
    """``random`` (seeded, the paper's choice), ``explicit`` or ``learned``."""

    seed: int = 1234
    """Seed of the random assignment (same seed and dataset list -> same mapping)."""

    mapping: dict[str, int] = field(default_factory=dict)
    """Explicit ``{dataset name: expert index}``; used when ``mode == "explicit"``."""

    affinity: Any = None
    """``mode == "learned"``: the ``[dataset][expert]`` affinities, as a JSON file path
    (``{"datasets": [...], "experts": E, "affinity": [[...]]}``), that document inline, or a bare
    matrix whose rows follow the datasets' order."""

    max_tasks_per_expert: int | None = None
    """Upper bound on datasets sharing one expert; ``None`` allows any many-to-one mapping."""

    def __post_init__(self) -> None:
        if not isinstance(self.mode, AssignmentMode):
            if self.mode not in ASSIGNMENT_MODES:
                raise ValueError(
                    f"task assignment mode must be one of {ASSIGNMENT_MODES}, got {self.mode!r}"
                )
            self.mode = AssignmentMode(self.mode)
        if self.mode is AssignmentMode.learned and self.affinity is None:
            raise ValueError(
                "task assignment mode 'learned' needs affinity: a JSON file "
                '({"datasets": [...], "experts": E, "affinity": [[...]]}) or the matrix inline'
            )


def assign_tasks_to_experts(
    datasets: Sequence[str], num_experts: int, cfg: TaskAssignmentConfig
) -> list[int]:
    """Expert index for each dataset, in dataset order (``result[task_id] = expert``).

    Raises:
        ValueError: empty or duplicated dataset names, an unknown mode, an explicit mapping that
            misses a dataset, names an unknown one or an expert outside ``[0, num_experts)``, an
            affinity that cannot be read or does not fit (:func:`load_affinity`), or more
            datasets on one expert than ``max_tasks_per_expert``.
    """
    datasets = list(datasets)
    if num_experts < 1:
        raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    if not datasets:
        raise ValueError("task assignment needs at least one dataset")
    duplicates = sorted(name for name, n in Counter(datasets).items() if n > 1)
    if duplicates:
        raise ValueError(f"task assignment: duplicated dataset names {duplicates}")

    if cfg.mode is AssignmentMode.random:
        experts = _random_deal(len(datasets), num_experts, cfg.seed)
    elif cfg.mode is AssignmentMode.explicit:
        experts = _explicit(datasets, num_experts, cfg.mapping)
    else:
        from nemo_neko.moe.assignment_solver import solve_assignment

        experts = solve_assignment(load_affinity(cfg.affinity, datasets, num_experts))

    if cfg.max_tasks_per_expert is not None:
        load = Counter(experts)
        over = {e: n for e, n in sorted(load.items()) if n > cfg.max_tasks_per_expert}
        if over:
            detail = ", ".join(
                f"expert {e}: {[d for d, x in zip(datasets, experts) if x == e]}" for e in over
            )
            raise ValueError(
                f"more tasks mapped to one expert than max_tasks_per_expert="
                f"{cfg.max_tasks_per_expert} allows ({detail})"
            )
    return experts


def _random_deal(num_tasks: int, num_experts: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    experts: list[int] = []
    while len(experts) < num_tasks:
        round_ = list(range(num_experts))
        rng.shuffle(round_)
        experts.extend(round_)
    return experts[:num_tasks]


def _explicit(datasets: list[str], num_experts: int, mapping: dict[str, int]) -> list[int]:
    unknown = sorted(set(mapping) - set(datasets))
    if unknown:
        raise ValueError(
            f"explicit task mapping names unknown datasets {unknown}; known datasets: {datasets}"
        )
    missing = [d for d in datasets if d not in mapping]
    if missing:
        raise ValueError(f"explicit task mapping has no expert for datasets {missing}")
    experts = []
    for name in datasets:
        expert = mapping[name]
        if isinstance(expert, bool) or not isinstance(expert, int):
            raise ValueError(
                f"explicit task mapping: expert for {name!r} must be an int, got {expert!r}"
            )
        if not 0 <= expert < num_experts:
            raise ValueError(
                f"explicit task mapping: dataset {name!r} -> expert {expert} is outside "
                f"[0, {num_experts}) (num_experts={num_experts})"
            )
        experts.append(expert)
    return experts


def load_affinity(affinity: Any, datasets: Sequence[str], num_experts: int) -> list[list[float]]:
    """The ``[D][E]`` affinity matrix of ``affinity`` (a file path, the document or a bare
    matrix; see :attr:`TaskAssignmentConfig.affinity`), rows in ``datasets`` order.

    Raises:
        ValueError (one line, naming the file): unreadable file or JSON, a document without
        ``datasets``/``experts``/``affinity``, duplicated or unknown dataset names, a training
        dataset without a row, another number of experts than the model's, a matrix of the
        wrong shape, a NaN, infinite, non-numeric or negative entry.
    """
    from nemo_neko.moe.assignment_solver import check_affinity

    where = "routing.assignment.affinity"
    document = _plain(os.fspath(affinity) if isinstance(affinity, os.PathLike) else affinity)
    if isinstance(document, str):
        where = f"{where} ({document})"
        try:
            with open(document, encoding="utf-8") as fh:
                document = json.load(fh)
        except (OSError, ValueError) as err:
            raise ValueError(f"{where}: cannot read the affinity file ({err})") from None
    if isinstance(document, list):
        check_affinity(document, len(datasets), num_experts, where)
        return [[float(v) for v in row] for row in document]
    if not isinstance(document, dict):
        raise ValueError(f"{where}: expected a file path, a document or a matrix, got {affinity!r}")
    missing = [key for key in ("datasets", "experts", "affinity") if key not in document]
    if missing:
        raise ValueError(f"{where}: the affinity document has no {missing}")
    names, experts, matrix = document["datasets"], document["experts"], document["affinity"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: 'datasets' must be a list of dataset names, got {names!r}")
    duplicates = sorted(n for n, k in Counter(names).items() if k > 1)
    if duplicates:
        raise ValueError(f"{where}: duplicated dataset names {duplicates}")
    unknown = [n for n in names if n not in datasets]
    if unknown:
        raise ValueError(
            f"{where}: unknown datasets {unknown}; training datasets: {list(datasets)}"
        )
    absent = [n for n in datasets if n not in names]
    if absent:
        raise ValueError(f"{where}: no affinity row for training datasets {absent}")
    if isinstance(experts, bool) or experts != num_experts:
        raise ValueError(
            f"{where}: affinity is for experts={experts!r}, the model has {num_experts}"
        )
    check_affinity(matrix, len(names), num_experts, where)
    row_of = {name: row for name, row in zip(names, matrix)}
    return [[float(v) for v in row_of[name]] for name in datasets]


def _plain(value: Any) -> Any:
    """OmegaConf containers (or any mapping / sequence) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value
