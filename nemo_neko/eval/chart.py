"""PNG bar chart of a correction report: baseline / corrected / N-best oracle per dataset.

One panel per metric (WER: lower is better; BLEU: higher is better), one group of bars per
(dataset, task, language) row. matplotlib is optional: it is imported only here, drawn with its
Agg canvas (no display, no global backend switch).
"""

from __future__ import annotations

import os

from nemo_neko.eval.metrics import get_metric
from nemo_neko.eval.report import CorrectionReport

MATPLOTLIB_HINT = "the PNG chart needs matplotlib: pip install 'matplotlib>=3.7'"

SERIES = (("baseline", "baseline", "#9e9e9e"), ("corrected", "corrected", "#1f77b4"),
          ("nbest_oracle", "N-best oracle", "#2ca02c"))  # fmt: skip


def write_chart(report: CorrectionReport, path: str | os.PathLike) -> None:
    """Draw the chart into ``path`` (PNG).

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(MATPLOTLIB_HINT) from err

    metrics = list(dict.fromkeys(row.metric for row in report.rows))
    series = [s for s in SERIES if any(getattr(r, s[0]) is not None for r in report.rows)]
    widest = max(sum(1 for r in report.rows if r.metric == m) for m in metrics)
    fig = Figure(figsize=(max(6.0, 1.1 * widest + 2), 3.6 * len(metrics)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    width = 0.8 / len(series)
    for ax, metric in zip(axes, metrics):
        rows = [r for r in report.rows if r.metric == metric]
        labels = [
            f"{r.dataset}\n{r.task}" + (f" ({r.language})" if r.language else "") for r in rows
        ]
        for k, (attr, label, color) in enumerate(series):
            values = [getattr(r, attr) for r in rows]
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
            bars = ax.bar(
                xs, [v if v is not None else 0 for v in values], width, label=label, color=color
            )
            ax.bar_label(
                bars, labels=[f"{v:.1f}" if v is not None else "" for v in values], fontsize=7
            )
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        better = "higher" if get_metric(metric).higher_is_better else "lower"
        ax.set_ylabel(f"{metric.upper()} ({better} is better)")
        ax.legend(fontsize=8, loc="upper right")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
