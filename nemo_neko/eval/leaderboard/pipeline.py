"""``python -m nemo_neko.eval leaderboard``: first pass, N-best, NeKo correction, leaderboard
manifests and the side-by-side score, over prepared leaderboard test sets, in one command.

Stages, each resumable (a rerun redoes only what is missing), under ``<out>`` (default
``<run_dir>/leaderboard``)::

    first_pass/<set>.jsonl     the first pass: a backend (canary: the leaderboard's own setting,
                               beam 1 without punctuation) or existing result manifests of any
                               model (:mod:`.recognize`)
    nbest/<set>.jsonl          the N-best lists NeKo corrects (canary: beam ``n``)
    records/<set>.records.jsonl.gz   asr correction records: the first pass as hypothesis 1,
                               then the N-best lists' other hypotheses, ``n`` in all
    corrected/predictions.jsonl      NeKo's corrections (``correct``: the same checks, resume
                               and provenance; each line carries its decoding ``time``)
    manifests/MODEL_<first pass>_DATASET_<dataset>_<split>.jsonl
    manifests/MODEL_<first pass>+<run name>_DATASET_<dataset>_<split>.jsonl
                               leaderboard result manifests (``audio_filepath`` = cut id,
                               ``duration``, ``time``, ``text``, ``pred_text``; chunked sets also
                               ``parent_id``, ``chunk_index``); the corrected system's ``time``
                               counts first pass + N-best + correction
    leaderboard.json/.md/.png  per set: first pass and corrected WER, relative change, RTFx;
                               the composite (the protocol's scoring, :mod:`nemo_neko.eval.scoring`)

Every input is checked (sets, backends, manifests, the run's checkpoint) before the first
recogniser or model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_neko.config import LeaderboardConfig
from nemo_neko.eval.leaderboard.sets import TestSet, find_sets, session_references

CANARY_DEFAULT_MODEL = "nvidia/canary-1b-flash"


@dataclass
class LeaderboardJob(LeaderboardConfig):
    """One leaderboard evaluation of a trained run: the run's ``leaderboard:`` settings
    (:class:`~nemo_neko.config.LeaderboardConfig`) with the CLI's flags over them."""

    run_dir: str = ""

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.run_dir) / "leaderboard"


def _backend_options(backend: str, options: dict[str, Any], first_pass: bool) -> dict[str, Any]:
    options = dict(options)
    if backend == "canary" and first_pass:
        options.setdefault("method", "first_pass")
    return options


def _model_label(backend: str, options: dict[str, Any]) -> str:
    if backend == "canary":
        model = str(options.get("model", CANARY_DEFAULT_MODEL))
        return Path(model).stem if model.endswith(".nemo") else model.replace("/", "-")
    return backend


def _first_pass_manifests(job: LeaderboardJob, sets: list[TestSet]) -> dict[str, Any]:
    """``{set name: ManifestSource}`` of the given result manifests, one per set."""
    from nemo_neko.eval.manifests import expand_inputs

    sources = expand_inputs([job.first_pass])
    chosen = {}
    for test_set in sets:
        fits = [
            s
            for s in sources
            if s.dataset == test_set.name or s.dataset.endswith("_" + test_set.name)
        ]
        if len(fits) != 1:
            found = ", ".join(sorted(s.dataset for s in sources)) or "none"
            raise ValueError(
                f"{job.first_pass}: {len(fits)} result manifests for set {test_set.name!r} "
                f"(need one named MODEL_<model>_DATASET_[<path>_]{test_set.name}.jsonl; found "
                f"datasets: {found})"
            )
        chosen[test_set.name] = fits[0]
    models = sorted({s.model for s in chosen.values()})
    if len(models) != 1:
        raise ValueError(f"{job.first_pass}: the first pass must be one model, found {models}")
    return chosen


def _is_backend(name: str) -> bool:
    from nemo_neko.asr.backends import BACKENDS

    return name in BACKENDS


def check_job(job: LeaderboardJob) -> tuple[list[TestSet], dict[str, Any] | None]:
    """Everything checkable before work: sets, backends, manifests, protocol, the checkpoint.

    Returns:
        The sets, and the first-pass manifests by set (None when a backend makes the first pass).
    """
    from nemo_neko.asr.backends import BACKENDS, check_options, known_backends
    from nemo_neko.asr.cutio import scan_cuts
    from nemo_neko.eval.protocols import get_protocol
    from nemo_neko.inference.correct import latest_checkpoint

    if job.n < 1 or job.batch_size < 1:
        raise ValueError(f"n ({job.n}) and batch_size ({job.batch_size}) must be >= 1")
    get_protocol(job.protocol)
    sets = find_sets(job.sets)
    seen: dict[str, str] = {}
    for test_set in sets:  # every cut of every set readable, before the first model loads
        for info in scan_cuts(test_set.cuts):
            if info.id in seen:  # predictions are joined to the records by cut id
                raise ValueError(
                    f"{test_set.cuts}:{info.line}: field 'id': cut {info.id!r} is also in set "
                    f"{seen[info.id]!r}; the sets' cut ids must be unique"
                )
            seen[info.id] = test_set.name
    if job.nbest_backend not in BACKENDS:
        raise ValueError(
            f"unknown N-best backend {job.nbest_backend!r} (known: {', '.join(known_backends())})"
        )
    nbest_options = _backend_options(job.nbest_backend, job.nbest_options, first_pass=False)
    check_options(job.nbest_backend, {"n": job.n, **nbest_options})
    if job.first_pass in BACKENDS:
        first_options = _backend_options(job.first_pass, job.first_pass_options, first_pass=True)
        check_options(job.first_pass, {"n": 1, **first_options})
    manifests = None
    if not _is_backend(job.first_pass):
        if not Path(job.first_pass).exists():
            raise ValueError(
                f"first pass {job.first_pass!r} is neither a backend (canary, pocketsphinx) nor "
                "a folder or file of leaderboard result manifests"
            )
        manifests = _first_pass_manifests(job, sets)
    latest_checkpoint(job.run_dir)
    return sets, manifests


def build_records(test_set: TestSet, first: list[dict], nbest: list[dict], n: int):
    """asr records of one set: the first pass, then the N-best lists' other hypotheses."""
    from nemo_neko.data.records import CorrectionRecord

    lists = {row["id"]: row["hypotheses"] for row in nbest}
    records = []
    for row in first:
        hypotheses = list(dict.fromkeys([*row["hypotheses"][:1], *lists[row["id"]]]))[:n]
        meta = {"duration": row["duration"]}
        meta.update({k: row[k] for k in ("parent_id", "chunk_index", "parent_text") if k in row})
        records.append(
            CorrectionRecord(
                id=row["id"],
                task="asr",
                dataset=test_set.name,
                reference=row["text"],
                hypotheses=hypotheses,
                meta=meta,
            )
        )
    return records


def _manifest_row(row: dict, pred_text: str, seconds: float | None, sessions: dict) -> dict:
    out = {
        "audio_filepath": row["id"],
        "duration": row["duration"],
        "time": seconds,
        "text": sessions.get(row.get("parent_id"), row["text"]),
        "pred_text": pred_text,
    }
    out.update({k: row[k] for k in ("parent_id", "chunk_index") if k in row})
    return out


def _total(*parts: float | None) -> float | None:
    return None if any(p is None for p in parts) else sum(parts)


def write_manifests(
    out_dir: Path,
    test_set: TestSet,
    first: list[dict],
    nbest: list[dict],
    predictions: dict[str, dict],
    first_model: str,
    corrected_model: str,
) -> tuple[Path, Path]:
    """The first pass's and the corrected system's leaderboard manifests of one set."""
    from nemo_neko.utils.jsonl import write_jsonl

    nbest_time = {row["id"]: row.get("time") for row in nbest}
    folder = out_dir / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    sessions = session_references(first)
    first_rows, corrected_rows = [], []
    for row in first:
        first_rows.append(_manifest_row(row, row["hypotheses"][0], row.get("time"), sessions))
        line = predictions[row["id"]]
        seconds = _total(row.get("time"), nbest_time.get(row["id"]), line.get("time"))
        corrected_rows.append(_manifest_row(row, line["prediction"], seconds, sessions))
    paths = folder / test_set.manifest_name(first_model), folder / test_set.manifest_name(
        corrected_model
    )
    for path, rows in zip(paths, (first_rows, corrected_rows)):
        write_jsonl(path, (json.dumps(r, ensure_ascii=False) for r in rows))
    return paths


def run_leaderboard(job: LeaderboardJob) -> dict:
    """Run every stage (see the module docstring); returns the comparison (also written)."""
    from nemo_neko.config import load_run_config
    from nemo_neko.data.records import write_records
    from nemo_neko.eval.leaderboard.compare import compare, write_comparison
    from nemo_neko.eval.leaderboard.recognize import import_first_pass, recognize_set
    from nemo_neko.eval.manifests import ManifestSource
    from nemo_neko.eval.scoring import score_sources
    from nemo_neko.inference.provenance import read_lines
    from nemo_neko.paths import RunPaths

    sets, manifests = check_job(job)
    run = load_run_config(RunPaths(job.run_dir).config)
    out = job.out_dir
    out.mkdir(parents=True, exist_ok=True)
    first_options = _backend_options(job.first_pass, job.first_pass_options, first_pass=True)
    nbest_options = _backend_options(job.nbest_backend, job.nbest_options, first_pass=False)
    if manifests is not None:
        first_model = job.first_pass_model or next(iter(manifests.values())).model
    else:
        first_model = job.first_pass_model or _model_label(job.first_pass, first_options)
    corrected_model = f"{first_model}+{run.name}"

    firsts, nbests, record_files = {}, {}, []
    for test_set in sets:
        rows_path = out / "first_pass" / f"{test_set.name}.jsonl"
        if manifests is not None:
            firsts[test_set.name] = import_first_pass(
                test_set, manifests[test_set.name].path, rows_path
            )
        else:
            firsts[test_set.name] = recognize_set(
                test_set,
                rows_path,
                backend=job.first_pass,
                options=first_options,
                n=1,
                batch_size=job.batch_size,
                seed=job.seed,
                label="first pass",
            )
        nbests[test_set.name] = recognize_set(
            test_set,
            out / "nbest" / f"{test_set.name}.jsonl",
            backend=job.nbest_backend,
            options=nbest_options,
            n=job.n,
            batch_size=job.batch_size,
            seed=job.seed,
            label=f"{job.n}-best",
        )
        records = build_records(test_set, firsts[test_set.name], nbests[test_set.name], job.n)
        path = out / "records" / f"{test_set.name}.records.jsonl.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_records(path, records)
        record_files.append(str(path))

    predictions_path = out / "corrected" / "predictions.jsonl"
    predictions_path.parent.mkdir(parents=True, exist_ok=True)
    correct_stage(job, run, record_files, predictions_path)
    predictions = {line["id"]: line for line in read_lines(predictions_path)}

    sources = {"first": [], "corrected": []}
    for test_set in sets:
        first_path, corrected_path = write_manifests(
            out,
            test_set,
            firsts[test_set.name],
            nbests[test_set.name],
            predictions,
            first_model,
            corrected_model,
        )
        for kind, path, model in (
            ("first", first_path, first_model),
            ("corrected", corrected_path, corrected_model),
        ):
            sources[kind].append(
                ManifestSource(str(path), model.replace("/", "-"), test_set.name, test_set.split)
            )
    scored = score_sources(sources["first"] + sources["corrected"], job.protocol)
    comparison = compare(scored, first_model.replace("/", "-"), corrected_model.replace("/", "-"))
    comparison["run"] = {"run_dir": str(job.run_dir), "checkpoint": _source_of(predictions)}
    write_comparison(comparison, out)
    return comparison


def correct_stage(job: LeaderboardJob, run, record_files: list[str], out: Path) -> None:
    """NeKo's correction of the records: in this process, or with ``generate.nproc`` ranks
    (``generate.tensor_parallel`` x ``expert_parallel`` replicas) under torchrun on this node."""
    import subprocess

    from nemo_neko.inference.correct import correct_records
    from nemo_neko.launch.local import correct_torchrun

    if run.generate.nproc <= 1:
        correct_records(job.run_dir, record_files, out, limit_per_dataset=0)
        return
    command = correct_torchrun(run.generate.nproc) + [
        "-m", "nemo_neko.eval", "correct", "--run-dir", str(job.run_dir),
        "--records", *record_files, "--out", str(out), "--limit-per-dataset", "0",
    ]  # fmt: skip
    print(f"[leaderboard] correcting with {run.generate.nproc} ranks: {' '.join(command)}")
    done = subprocess.run(command)
    if done.returncode:
        raise RuntimeError(f"correct with {run.generate.nproc} ranks failed ({done.returncode})")


def _source_of(predictions: dict[str, dict]) -> str | None:
    for line in predictions.values():
        return (line.get("source") or {}).get("checkpoint")
    return None
