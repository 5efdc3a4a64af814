"""Terminal tables, markdown and JSON for :class:`ScoreResult` and :class:`CorrectionReport`.

Numbers are shown with 2 decimals (the leaderboard's precision); JSON keeps full values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from nemo_neko.eval.report import CorrectionReport, ReportRow
from nemo_neko.eval.scoring import ScoreResult


def fmt(value, digits: int = 2) -> str:
    """``12.3456`` -> ``"12.35"``; None -> ``"-"``; ints as they are."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        out = []
        for cell, width in zip(cells, widths):
            cell = str(cell)
            numeric = cell.replace(".", "", 1).replace("-", "", 1).isdigit() or cell == "-"
            out.append(cell.rjust(width) if numeric else cell.ljust(width))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (``|`` in cells escaped)."""

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(r) for r in rows)])


# ----------------------------------------------------------------------------------- score
SCORE_HEADERS = ("model", "dataset", "utterances", "dropped", "ref words", "WER %", "RTFx")
COMPOSITE_HEADERS = ("model", "datasets", "composite WER %", "RTFx")


def _score_tables(result: ScoreResult):
    per_dataset = [
        (
            s.model,
            s.dataset,
            s.utterances,
            s.dropped_empty + s.dropped_ignored,
            s.ref_words,
            fmt(s.wer),
            fmt(s.rtfx),
        )
        for s in result.datasets
    ]
    composite = [(c.model, c.datasets, fmt(c.wer), fmt(c.rtfx)) for c in result.composites]
    return per_dataset, composite


def _score_notes(result: ScoreResult) -> list[str]:
    notes = []
    for s in result.datasets:
        if s.dropped_empty or s.dropped_ignored:
            notes.append(
                f"{s.dataset}: dropped {s.dropped_empty} empty and {s.dropped_ignored} "
                "'ignore time segment in scoring' reference(s)"
            )
        notes.extend(f"{s.dataset}: {n}" for n in s.notes)
    return notes


def score_heading(result: ScoreResult) -> str:
    return (
        f"protocol {result.protocol}: {result.description}; normaliser {result.normalizer}; "
        f"errors: {result.counter}"
    )


def score_text(result: ScoreResult) -> str:
    per_dataset, composite = _score_tables(result)
    parts = [score_heading(result), "", text_table(SCORE_HEADERS, per_dataset), ""]
    parts += [text_table(COMPOSITE_HEADERS, composite)]
    notes = _score_notes(result)
    if notes:
        parts += ["", "notes:", *(f"  - {n}" for n in notes)]
    return "\n".join(parts)


def score_markdown(result: ScoreResult) -> str:
    per_dataset, composite = _score_tables(result)
    parts = [f"## Open ASR Leaderboard scoring: {result.protocol}", "", score_heading(result), ""]
    parts += [
        markdown_table(SCORE_HEADERS, per_dataset),
        "",
        markdown_table(COMPOSITE_HEADERS, composite),
    ]
    notes = _score_notes(result)
    if notes:
        parts += ["", *(f"- {n}" for n in notes)]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------- report
REPORT_HEADERS = (
    "dataset", "task", "lang", "metric", "utterances", "baseline", "N-best oracle",
    "comp. oracle", "corrected", "rel. gain %",
)  # fmt: skip


def _report_cells(row: ReportRow):
    return (
        row.dataset,
        row.task,
        row.language or "-",
        row.metric.upper(),
        row.utterances,
        fmt(row.baseline),
        fmt(row.nbest_oracle),
        fmt(row.compositional_oracle),
        fmt(row.corrected),
        fmt(row.relative_improvement),
    )


def report_text(report: CorrectionReport) -> str:
    rows = [_report_cells(r) for r in report.rows + report.task_means]
    parts = [f"correction report (WER normaliser: {report.normalizer})", ""]
    parts.append(text_table(REPORT_HEADERS, rows))
    if report.notes:
        parts += ["", "notes:", *(f"  - {n}" for n in report.notes)]
    return "\n".join(parts)


def report_markdown(report: CorrectionReport) -> str:
    parts = ["## Correction report", "", f"WER normaliser: `{report.normalizer}`.", ""]
    parts.append(markdown_table(REPORT_HEADERS, [_report_cells(r) for r in report.rows]))
    parts += ["", "Per task (unweighted mean over datasets):", ""]
    parts.append(markdown_table(REPORT_HEADERS, [_report_cells(r) for r in report.task_means]))
    if report.notes:
        parts += ["", *(f"- {n}" for n in report.notes)]
    return "\n".join(parts) + "\n"


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8), creating parent folders."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
