"""Which expert each training dataset is tied to: the f(T) of NeKo's task-guided routing.

Two modes:

* ``random`` (the paper's choice): a seeded shuffle of the experts, dealt to the datasets in
  the order they are listed. With no more datasets than experts every dataset gets its own
  expert; with more, the deal wraps around with a fresh shuffle per round, so that no expert
  carries more than ``ceil(datasets / experts)`` datasets (many datasets to one expert).
* ``explicit``: a ``{dataset: expert}`` mapping that must name every dataset, and nothing else.

Task ids are positions in the dataset list: dataset ``datasets[i]`` is task ``i``.
Every error is raised here, at configuration time, before any model is built.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class AssignmentMode(StrEnum):
    """How datasets are dealt to experts (``routing.assignment.mode``)."""

    random = "random"
    """A seeded shuffle of the experts, dealt in dataset order (the paper's choice)."""
    explicit = "explicit"
    """``mapping`` names each dataset's expert."""


ASSIGNMENT_MODES = tuple(m.value for m in AssignmentMode)


@dataclass
class TaskAssignmentConfig:
    """How datasets are mapped to experts."""

    mode: AssignmentMode = AssignmentMode.random
    """``random`` (seeded, the paper's choice) or ``explicit``."""

    seed: int = 1234
    """Seed of the random assignment (same seed and dataset list -> same mapping)."""

    mapping: dict[str, int] = field(default_factory=dict)
    """Explicit ``{dataset name: expert index}``; used when ``mode == "explicit"``."""

    max_tasks_per_expert: int | None = None
    """Upper bound on datasets sharing one expert; ``None`` allows any many-to-one mapping."""

    def __post_init__(self) -> None:
        if not isinstance(self.mode, AssignmentMode):
            if self.mode not in ASSIGNMENT_MODES:
                raise ValueError(
                    f"task assignment mode must be one of {ASSIGNMENT_MODES}, got {self.mode!r}"
                )
            self.mode = AssignmentMode(self.mode)


def assign_tasks_to_experts(
    datasets: Sequence[str], num_experts: int, cfg: TaskAssignmentConfig
) -> list[int]:
    """Expert index for each dataset, in dataset order (``result[task_id] = expert``).

    Raises:
        ValueError: empty or duplicated dataset names, an unknown mode, an explicit mapping that
            misses a dataset, names an unknown one or an expert outside ``[0, num_experts)``, or
            more datasets on one expert than ``max_tasks_per_expert``.
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
    else:
        experts = _explicit(datasets, num_experts, cfg.mapping)

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
