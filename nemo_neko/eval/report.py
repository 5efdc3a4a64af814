"""What correction achieved: the correction report (``python -m nemo_neko.eval report``).

Records are grouped by (dataset, task, target language). For each group, with the task's metric
(:mod:`nemo_neko.eval.metrics`: WER for asr/ocr/tec, BLEU for st/mt) on the metric's tokens:

* **baseline**: the task's uncorrected output (:meth:`Task.baseline`: the 1-best hypothesis, or
  the source text for OCR/TEC);
* **N-best oracle**: per utterance the best candidate (:meth:`Task.candidates`), then scored as
  a corpus. For WER the best is the one with the fewest word edits against the reference; for
  BLEU the one with the highest sentence BLEU (fewest edits can score below the 1-best under
  BLEU). Ties go to the better-ranked candidate;
* **compositional oracle**: per utterance the reference with every token that occurs in none of
  the candidates removed, then scored as a corpus. For WER that is exactly "reference words absent
  from every hypothesis count as errors" (as deletions): the best any output built only from
  candidate words could do, word order and multiplicity aside. It is an optimistic bound, not an
  achievable output;
* **corrected**: the model's predictions, joined by record id (:mod:`nemo_neko.eval.predictions`);
* **relative improvement**: percent of the baseline gained by the correction (WER reduction
  for WER, BLEU increase for BLEU; positive = better).

Records whose reference has no tokens are not scored; each row counts them. Per task, a summary
row gives the unweighted mean over its datasets (as the leaderboard's composite does).

Usage::

    from nemo_neko.data.records import read_records
    from nemo_neko.eval.report import build_report

    report = build_report(read_records(paths), predictions=None, normalizer="none")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from nemo_neko.eval.metrics import get_metric
from nemo_neko.eval.predictions import join_predictions
from nemo_neko.tasks import get_task


@dataclass
class ReportRow:
    """One (dataset, task, language) group, or a per-task mean (``dataset`` = "mean of N")."""

    dataset: str
    task: str
    metric: str
    language: str | None
    tokenization: str
    utterances: int
    dropped_empty_reference: int
    baseline: float
    nbest_oracle: float
    compositional_oracle: float
    corrected: float | None = None
    relative_improvement: float | None = None
    missing_predictions: int = 0
    """Records without a prediction, scored as empty output (``missing_as_empty``)."""
    warning: str | None = None
    """Set when the metric fell back (e.g. no MeCab for Japanese BLEU)."""


@dataclass
class CorrectionReport:
    """Everything ``report`` prints and writes."""

    normalizer: str
    rows: list[ReportRow]
    task_means: list[ReportRow]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def compositional_output(
    reference: Sequence[str], candidates: Sequence[Sequence[str]]
) -> list[str]:
    """The reference without the tokens that occur in no candidate."""
    pool = {token for c in candidates for token in c}
    return [token for token in reference if token in pool]


def score_group(
    records: Sequence,
    outputs: Sequence[str] | None = None,
    *,
    normalizer: str = "none",
    missing: int = 0,
) -> ReportRow:
    """Score one group of records of one task, dataset and language (see the module docstring).

    Args:
        records: :class:`~nemo_neko.data.records.CorrectionRecord` objects.
        outputs: corrected outputs, one per record, or None.
        normalizer: text normaliser for WER tasks (:mod:`nemo_neko.eval.normalizer`).
        missing: how many outputs were missing predictions (reported, already "" in ``outputs``).
    """
    first = records[0]
    task = get_task(first.task)
    metric = get_metric(task.metric)
    tokenize = metric.tokenizer(first.tgt_lang, normalizer)
    refs, baselines, oracles, composed, corrected = [], [], [], [], []
    dropped = 0
    for i, record in enumerate(records):
        ref = tokenize(task.target(record))
        if not ref:
            dropped += 1
            continue
        candidates = [tokenize(c) for c in task.candidates(record)]
        refs.append(ref)
        baselines.append(tokenize(task.baseline(record)))
        oracles.append(candidates[metric.oracle_pick(ref, candidates)])
        composed.append(compositional_output(ref, candidates))
        if outputs is not None:
            corrected.append(tokenize(outputs[i]))
    if not refs:
        raise ValueError(
            f"dataset {first.dataset!r}, task {first.task!r}: "
            f"all {len(records)} references are empty"
        )
    baseline = metric.corpus_score(baselines, refs)
    row = ReportRow(
        dataset=first.dataset,
        task=first.task,
        metric=metric.name,
        language=first.tgt_lang,
        tokenization=tokenize.name,
        utterances=len(refs),
        dropped_empty_reference=dropped,
        baseline=baseline,
        nbest_oracle=metric.corpus_score(oracles, refs),
        compositional_oracle=metric.corpus_score(composed, refs),
        missing_predictions=missing,
        warning=tokenize.warning,
    )
    if outputs is not None:
        row.corrected = metric.corpus_score(corrected, refs)
        row.relative_improvement = metric.relative_improvement(baseline, row.corrected)
    return row


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def task_means(rows: Sequence[ReportRow]) -> list[ReportRow]:
    """Per task: unweighted means over its rows (datasets and languages)."""
    by_task: dict[str, list[ReportRow]] = {}
    for row in rows:
        by_task.setdefault(row.task, []).append(row)
    out = []
    for task, group in by_task.items():
        metric = get_metric(group[0].metric)
        row = ReportRow(
            dataset=f"mean of {len(group)}",
            task=task,
            metric=metric.name,
            language=None,
            tokenization=", ".join(sorted({r.tokenization for r in group})),
            utterances=sum(r.utterances for r in group),
            dropped_empty_reference=sum(r.dropped_empty_reference for r in group),
            baseline=_mean([r.baseline for r in group]),
            nbest_oracle=_mean([r.nbest_oracle for r in group]),
            compositional_oracle=_mean([r.compositional_oracle for r in group]),
            missing_predictions=sum(r.missing_predictions for r in group),
        )
        if all(r.corrected is not None for r in group):
            row.corrected = _mean([r.corrected for r in group])
            row.relative_improvement = metric.relative_improvement(row.baseline, row.corrected)
        out.append(row)
    return out


def build_report(
    records: Sequence,
    predictions: dict[str, str] | None = None,
    *,
    normalizer: str = "none",
    missing_as_empty: bool = False,
) -> CorrectionReport:
    """The correction report for ``records`` (and ``predictions``, ``{id: text}``, if given).

    Raises:
        PredictionMismatchError: predictions missing (without ``missing_as_empty``) or extra.
        ValueError: no records, repeated record ids with predictions, or a group without any
            non-empty reference.
    """
    if not records:
        raise ValueError("no records to report on")
    notes: list[str] = []
    outputs: list[str] | None = None
    missing_ids: set[str] = set()
    if predictions is not None:
        outputs, missing = join_predictions(
            [r.id for r in records], predictions, missing_as_empty=missing_as_empty
        )
        missing_ids = set(missing)
        if missing:
            notes.append(f"{len(missing)} record(s) without a prediction scored as empty output")
    groups: dict[tuple, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault((record.dataset, record.task, record.tgt_lang), []).append(i)
    rows = []
    for indices in groups.values():
        group = [records[i] for i in indices]
        group_outputs = None if outputs is None else [outputs[i] for i in indices]
        missing = sum(1 for r in group if r.id in missing_ids)
        rows.append(score_group(group, group_outputs, normalizer=normalizer, missing=missing))
    for row in rows:
        if row.dropped_empty_reference:
            notes.append(
                f"{row.dataset}/{row.task}: {row.dropped_empty_reference} record(s) with an "
                "empty reference not scored"
            )
    for row in rows:
        if row.warning and row.warning not in notes:
            notes.append(row.warning)
    return CorrectionReport(
        normalizer=normalizer, rows=rows, task_means=task_means(rows), notes=notes
    )
