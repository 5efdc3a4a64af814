"""Typed settings of an experiment: several arms trained on the same data, budget and seed.

``experiment.arms`` empty (the default): the launcher runs one ordinary run. With arms, the
launcher hands the composed config to :mod:`nemo_neko.experiment.runner`, which derives each
arm's run config from it (:mod:`nemo_neko.experiment.arms`) and writes one comparison.
Pure dataclasses: imported by :mod:`nemo_neko.config` (the schema), nothing heavy here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ArmKind(StrEnum):
    """What an arm trains (the rows of the paper's Tables 1 and 5)."""

    dense = "dense"
    """The base model fine-tuned without upcycling (the paper's FFT rows)."""
    moe = "moe"
    """Upcycled, plain top-k routing, no forcing (the paper's MoE FFT)."""
    neko = "neko"
    """Upcycled with task forcing and the run's assignment (random by default: the paper)."""
    neko_learned = "neko_learned"
    """Task forcing with the assignment learned from a warm-up's router affinity: a ``moe`` warm-up
    of ``experiment.warmup_steps`` steps measures each dataset's gate choices, the balanced
    matching of maximal affinity (:mod:`nemo_neko.moe.assignment_solver`) ties the datasets, and
    the arm trains from the warm-up's weights for the rest of the budget (a fresh optimizer,
    schedule and data order: the warm-up's first batches come again)."""
    btx = "btx"
    """Branch-Train-Mix: dense copies fine-tuned per group of datasets, merged as experts (the
    other weights averaged), then the MoE (router included) fine-tuned with plain top-k routing."""


ARM_KINDS = tuple(k.value for k in ArmKind)

KIND_KEYS = {
    ArmKind.dense: ("model.num_experts", "model.moe_layers", "model.parallel.expert"),
    ArmKind.moe: ("routing.forcing",),
    ArmKind.neko: (),
    ArmKind.neko_learned: ("routing.assignment", "train.init_from"),
    ArmKind.btx: ("model.num_experts", "routing.forcing", "train.init_from"),
}
"""The keys each kind sets itself; with :data:`EVERY_KIND`'s, an arm's overrides may not name
them (they would be replaced without a word)."""
EVERY_KIND = ("run_dir", "name", "stages", "experiment")


@dataclass
class ArmConfig:
    """One arm: a kind and any more overrides of the run config (``train.lr=3e-4``)."""

    name: str = ""
    """The arm's run directory under the experiment's (``<experiment.dir>/<name>``)."""
    kind: ArmKind = ArmKind.neko
    """What the arm trains (:class:`ArmKind`)."""
    overrides: list[str] = field(default_factory=list)
    """Dotted ``key=value`` overrides of the arm's run config (``train.lr=3e-4``), applied before
    the kind's own settings; a key the kind sets (:data:`nemo_neko.experiment.arms.KIND_KEYS`)
    is refused."""


@dataclass
class ExperimentConfig:
    """An experiment (``python launch/run.py experiment=paper_cpu``): see the module docstring."""

    name: str | None = None
    """Names the experiment and its folder; None with no arms (a single run)."""
    dir: str = "runs/experiments/${experiment.name}"
    """The experiment's folder: one ordinary run directory per arm, ``comparison.{json,md,png}``."""
    arms: list[ArmConfig] = field(default_factory=list)
    """The arms, run in this order; the comparison lists them in it too."""
    held_out: list[str] = field(default_factory=list)
    """Training datasets no arm trains on: their held-out sets are scored zero-shot (the paper's
    Table 1 zero-shot columns); they must name datasets of ``data.train`` and of ``data.test``."""
    warmup_steps: int = 10
    """``neko_learned``: steps of the ``moe`` warm-up that measures the router affinity (part of
    the arm's ``train.max_steps``)."""
    btx_groups: int = 2
    """``btx``: number of branches; training dataset ``i`` (after ``held_out``) goes to branch
    ``i mod btx_groups``, and expert ``e`` is branch ``e mod btx_groups``'s FFN."""
    btx_branch_share: float = 0.75
    """``btx``: the share of ``train.max_steps`` spent on the branches (split evenly among them);
    the rest trains the merged MoE."""

    def check(
        self, train_datasets: list[str], test_datasets: list[str], max_steps, num_experts: int = 0
    ) -> None:
        """Raise ``ValueError`` naming the broken rule (before anything runs)."""
        if not self.arms:
            return
        if not self.name:
            raise ValueError("experiment.name: an experiment with arms needs a name")
        names = [arm.name for arm in self.arms]
        for arm in self.arms:
            if not arm.name or "/" in arm.name or arm.name.startswith("."):
                raise ValueError(f"experiment.arms: arm name {arm.name!r} is not a folder name")
            if not isinstance(arm.kind, ArmKind):
                if arm.kind not in ARM_KINDS:
                    raise ValueError(
                        f"experiment.arms.{arm.name}.kind={arm.kind!r} is not one of: "
                        f"{', '.join(ARM_KINDS)}"
                    )
                arm.kind = ArmKind(arm.kind)
            taken = (*EVERY_KIND, *KIND_KEYS[arm.kind])
            for override in arm.overrides:
                if "=" not in override:
                    raise ValueError(
                        f"experiment.arms.{arm.name}.overrides: {override!r} is not key=value"
                    )
                key = override.split("=", 1)[0].strip().lstrip("+")
                if any(
                    key == t or key.startswith(t + ".") or t.startswith(key + ".") for t in taken
                ):
                    raise ValueError(
                        f"experiment.arms.{arm.name}.overrides: {key} is set by the arm's kind "
                        f"({arm.kind}) or by the experiment"
                    )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"experiment.arms: arm names repeated: {repeated}")
        for name in self.held_out:
            if name not in train_datasets:
                raise ValueError(
                    f"experiment.held_out: {name!r} is not a training dataset ({train_datasets})"
                )
            if name not in test_datasets:
                raise ValueError(
                    f"experiment.held_out: {name!r} has no held-out set to score zero-shot"
                )
        if len(set(self.held_out)) >= len(set(train_datasets)):
            raise ValueError("experiment.held_out: every training dataset is held out")
        kinds = {arm.kind for arm in self.arms}
        budgeted = kinds & {ArmKind.btx, ArmKind.neko_learned}
        if budgeted and not max_steps:
            raise ValueError(
                f"experiment arms {sorted(k.value for k in budgeted)} split the budget: set "
                f"train.max_steps"
            )
        if ArmKind.neko_learned in kinds and not 0 < self.warmup_steps < (max_steps or 0):
            raise ValueError(
                f"experiment.warmup_steps={self.warmup_steps} must be in [1, train.max_steps)"
            )
        if ArmKind.btx in kinds:
            trained = len(set(train_datasets) - set(self.held_out))
            most = min(trained, num_experts or trained)
            if not 1 <= self.btx_groups <= most:
                raise ValueError(
                    f"experiment.btx_groups={self.btx_groups} must be in [1, {most}] (the "
                    f"training datasets, and the experts each branch becomes)"
                )
            if not 0 < self.btx_branch_share < 1:
                raise ValueError(
                    f"experiment.btx_branch_share={self.btx_branch_share} must be in (0, 1)"
                )
            branch, mix = btx_steps(max_steps, self.btx_groups, self.btx_branch_share)
            if branch < 1 or mix < 1:
                raise ValueError(
                    f"experiment: train.max_steps={max_steps} leaves btx {branch} steps per "
                    f"branch and {mix} to mix: raise it"
                )


def btx_steps(max_steps: int, groups: int, share: float) -> tuple[int, int]:
    """``(steps per branch, steps of the mix)`` of a ``btx`` arm's budget of ``max_steps``."""
    branch = int(max_steps * share) // groups
    return branch, max_steps - branch * groups
