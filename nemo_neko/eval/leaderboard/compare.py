"""The side-by-side leaderboard table: first pass vs NeKo-corrected, per set and composite.

Built from one :class:`~nemo_neko.eval.scoring.ScoreResult` holding both models' manifests (the
protocol's normaliser, error counting, chunk joining, rounding and composite). Relative change
is ``100 * (corrected - first pass) / first pass`` of the rounded WERs: negative is better.
Written as ``leaderboard.json``, ``leaderboard.md`` and ``leaderboard.png`` (a bar chart; needs
matplotlib), and printed as a terminal table.
"""

from __future__ import annotations

import os
from pathlib import Path

from nemo_neko.eval.protocols import covered_sets, get_protocol
from nemo_neko.eval.render import fmt, markdown_table, text_table, write_json, write_text
from nemo_neko.eval.scoring import ScoreResult

HEADERS = ("dataset", "utts", "first pass WER", "corrected WER", "rel. change %",
           "first pass RTFx", "corrected RTFx")  # fmt: skip


def _change(first: float, corrected: float) -> float | None:
    return round(100 * (corrected - first) / first, 2) if first else None


def compare(scored: ScoreResult, first_model: str, corrected_model: str) -> dict:
    """The comparison as JSON-ready data (see the module docstring)."""
    by = {(s.model, s.dataset): s for s in scored.datasets}
    datasets = []
    for score in scored.datasets:
        if score.model != first_model:
            continue
        fixed = by[(corrected_model, score.dataset)]
        datasets.append(
            {
                "dataset": score.dataset,
                "utterances": score.utterances,
                "first_pass_wer": score.wer,
                "corrected_wer": fixed.wer,
                "relative_change": _change(score.wer, fixed.wer),
                "first_pass_rtfx": score.rtfx,
                "corrected_rtfx": fixed.rtfx,
                "notes": sorted(set(score.notes + fixed.notes)),
            }
        )
    composites = {c.model: c for c in scored.composites}
    first, fixed = composites[first_model], composites[corrected_model]
    present, missing = covered_sets(get_protocol(scored.protocol), [d["dataset"] for d in datasets])
    return {
        "protocol": scored.protocol,
        "description": scored.description,
        "first_pass": first_model,
        "corrected": corrected_model,
        "datasets": datasets,
        "composite": {
            "datasets": first.datasets,
            "first_pass_wer": first.wer,
            "corrected_wer": fixed.wer,
            "relative_change": _change(first.wer, fixed.wer),
            "first_pass_rtfx": first.rtfx,
            "corrected_rtfx": fixed.rtfx,
            "public_sets": present,
            "public_sets_missing": missing,
        },
        "scores": scored.to_dict(),
    }


def _row(label: str, utterances: str, figures: dict) -> list[str]:
    return [
        label,
        utterances,
        fmt(figures["first_pass_wer"]),
        fmt(figures["corrected_wer"]),
        fmt(figures["relative_change"]),
        fmt(figures["first_pass_rtfx"], 1),
        fmt(figures["corrected_rtfx"], 1),
    ]


def _cells(comparison: dict) -> list[list[str]]:
    rows = [_row(d["dataset"], str(d["utterances"]), d) for d in comparison["datasets"]]
    c = comparison["composite"]
    return rows + [_row(f"composite ({c['datasets']} sets)", "", c)]


def heading(comparison: dict) -> str:
    return (
        f"Open ASR Leaderboard ({comparison['protocol']}): {comparison['first_pass']} vs "
        f"{comparison['corrected']}"
    )


def comparison_text(comparison: dict) -> str:
    return "\n".join(
        [heading(comparison), text_table(HEADERS, _cells(comparison)), coverage(comparison)]
    )


def comparison_markdown(comparison: dict) -> str:
    notes = [f"- {d['dataset']}: {n}" for d in comparison["datasets"] for n in d["notes"]]
    parts = [f"## {heading(comparison)}", "", comparison["description"], ""]
    parts += [markdown_table(HEADERS, _cells(comparison)), ""]
    parts += [coverage(comparison), ""]
    if notes:
        parts += ["Notes:", *notes, ""]
    return "\n".join(parts)


def coverage(comparison: dict) -> str:
    """Whether the composite is the leaderboard's average: its public sets, all scored."""
    c = comparison["composite"]
    total = len(c["public_sets"]) + len(c["public_sets_missing"])
    if not c["public_sets_missing"]:
        return f"The composite is the leaderboard's {comparison['protocol']} average: all {total} public sets."
    missing = ", ".join(c["public_sets_missing"])
    return (
        f"The composite covers {len(c['public_sets'])} of the leaderboard's {total} public "
        f"{comparison['protocol']} sets (missing: {missing}): not comparable to its average."
    )


def write_chart(comparison: dict, path: str | os.PathLike) -> None:
    """Bars of first pass and corrected WER per set and composite (PNG)."""
    from nemo_neko.eval.chart import MATPLOTLIB_HINT

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(MATPLOTLIB_HINT) from err
    rows = [*comparison["datasets"], {"dataset": "composite", **comparison["composite"]}]
    fig = Figure(figsize=(max(6.0, 1.2 * len(rows) + 2), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for k, (key, label, color) in enumerate(
        (("first_pass_wer", comparison["first_pass"], "#9e9e9e"),
         ("corrected_wer", comparison["corrected"], "#1f77b4"))
    ):  # fmt: skip
        xs = [i + (k - 0.5) * 0.4 for i in range(len(rows))]
        bars = ax.bar(xs, [r[key] for r in rows], 0.4, label=label, color=color)
        ax.bar_label(bars, labels=[f"{r[key]:.2f}" for r in rows], fontsize=7)
    ax.set_xticks(range(len(rows)), [r["dataset"] for r in rows], fontsize=8)
    ax.set_ylabel(f"WER % ({comparison['protocol']}, lower is better)")
    ax.legend(fontsize=8, loc="upper right")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", dpi=120)


def write_comparison(comparison: dict, out_dir: Path) -> None:
    """``leaderboard.json``, ``leaderboard.md``, ``leaderboard.png`` in ``out_dir``."""
    write_json(out_dir / "leaderboard.json", comparison)
    write_text(out_dir / "leaderboard.md", comparison_markdown(comparison))
    write_chart(comparison, out_dir / "leaderboard.png")
