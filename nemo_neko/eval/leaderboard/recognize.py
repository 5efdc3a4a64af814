"""The recognition stages of the leaderboard path: the first pass and the N-best lists of one set.

``recognize_set`` runs a registered ASR backend (``nemo_neko.asr.backends``: ``canary``,
``pocketsphinx``) over a set's cuts in duration-sorted batches (longest first, as
:func:`nemo_neko.asr.sharding.plan_batches` plans them) and appends one JSON line per utterance
to ``<stage>/<set>.jsonl`` after every batch::

    {"id": cut id, "text": reference, "hypotheses": [best, ...], "scores": [...] | absent,
     "duration": seconds, "time": seconds, "parent_id"/"chunk_index": chunked sets only}

``time`` is the batch's recognition wall time divided by its size, as the leaderboard's own
``run_eval.py`` scripts record it. ``<stage>/<set>.job.json`` holds the job's fingerprint
(backend, its options, n, batch size, seed, the manifest): a rerun of the same job skips the
utterances already written (a line torn by a kill is cut off and redone); another job's file is
refused instead of mixed. ``"complete": true`` is written last.

``import_first_pass`` takes the first pass from existing leaderboard result manifests of any
model instead (``text``, ``pred_text``, ``duration``, ``time``), matched to the set's cuts by
``audio_filepath`` (a cut, recording or supervision id, or a file name of the recording), or
row by row in order when the file has the set's size and every normalised reference agrees.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from nemo_neko.eval.leaderboard.sets import TestSet, chunk_fields
from nemo_neko.utils.files import write_json_atomic

ROW_KEYS = ("id", "text", "hypotheses", "duration", "time")


def file_identity(path: str) -> dict[str, Any]:
    """What changes when a file is rewritten: absolute path, size and modification time."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def job_path(rows_path: Path) -> Path:
    return rows_path.with_name(rows_path.name.replace(".jsonl", ".job.json"))


def read_rows(rows_path: Path) -> list[dict]:
    """The rows written so far (a torn last line from a killed run is cut off the file)."""
    from nemo_neko.inference.provenance import read_lines

    return read_lines(rows_path)


def is_complete(rows_path: Path, fingerprint: str) -> bool:
    job = job_path(rows_path)
    if not job.is_file():
        return False
    stamp = json.loads(job.read_text())
    return stamp.get("fingerprint") == fingerprint and bool(stamp.get("complete"))


def _start(rows_path: Path, key: dict[str, Any]) -> str:
    """Check or create the job file; returns the fingerprint."""
    from nemo_neko.asr.sharding import fingerprint

    stamp = {"fingerprint": fingerprint(key), "job": key, "complete": False}
    job = job_path(rows_path)
    if job.is_file():
        previous = json.loads(job.read_text())
        if previous.get("fingerprint") != stamp["fingerprint"]:
            raise ValueError(
                f"{rows_path} was made by another job ({job}: {previous.get('job')}); rerun "
                "with the same options, give another --out, or delete those files"
            )
        return stamp["fingerprint"]
    if rows_path.exists():  # rows without their job file: of unknown origin, never resumed
        rows_path.unlink()
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job, stamp, indent=1, sort_keys=True, ensure_ascii=False)
    return stamp["fingerprint"]


def _finish(rows_path: Path, key: dict[str, Any], count: int) -> None:
    from nemo_neko.asr.sharding import fingerprint

    stamp = {"fingerprint": fingerprint(key), "job": key, "complete": True, "utterances": count}
    write_json_atomic(job_path(rows_path), stamp, indent=1, sort_keys=True, ensure_ascii=False)


def recognize_set(
    test_set: TestSet,
    rows_path: Path,
    *,
    backend: str,
    options: dict[str, Any],
    n: int,
    batch_size: int,
    seed: int = 0,
    label: str = "",
) -> list[dict]:
    """Run (or resume, or skip) one recognition stage over one set; returns its rows in
    manifest order (see the module docstring)."""
    from nemo_neko.asr.backends import backend_class, build_backend
    from nemo_neko.asr.cutio import load_audio, read_cuts, scan_cuts
    from nemo_neko.asr.nbest import finalize_nbest
    from nemo_neko.asr.sharding import batch_seed, plan_batches
    from nemo_neko.utils.progress import Progress

    backend_class(backend)  # an unknown name fails before any work
    infos = scan_cuts(test_set.cuts)
    key = {
        "cuts": file_identity(test_set.cuts),
        "backend": backend,
        "options": options,
        "n": n,
        "batch_size": batch_size,
        "seed": seed,
    }
    finger = _start(rows_path, key)
    order = [info.id for info in infos]
    if is_complete(rows_path, finger):
        rows = {row["id"]: row for row in read_rows(rows_path)}
        if sorted(rows) == sorted(order):
            return [rows[i] for i in order]
    done = {row["id"] for row in read_rows(rows_path)}
    plan = plan_batches([(i.id, i.duration) for i in infos], batch_size)
    todo = [(j, batch) for j, batch in enumerate(plan) if not set(batch) <= done]
    if todo:
        recogniser = build_backend(backend, {"n": n, **options})
        cuts = read_cuts(test_set.cuts, {cut_id for _, batch in todo for cut_id in batch})
        progress = Progress(
            len(order), desc=f"{label or backend} {test_set.name}", unit="utt", done=len(done)
        )
        audio_seconds = spent = 0.0
        with open(rows_path, "a", encoding="utf-8") as fh:
            for j, batch in todo:
                batch = [cut_id for cut_id in batch if cut_id not in done]
                audio = [load_audio(cuts[cut_id]) for cut_id in batch]
                start = time.perf_counter()
                results = recogniser.recognize(audio, seed=batch_seed(seed, j))
                seconds = time.perf_counter() - start
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"backend {backend} returned {len(results)} results for {len(batch)} cuts"
                    )
                for cut_id, nbest in zip(batch, results):
                    cut, nbest = cuts[cut_id], finalize_nbest(nbest, n)
                    row = {
                        "id": cut_id,
                        "text": cut.supervisions[0].text,
                        "hypotheses": list(nbest.texts),
                        "duration": float(cut.duration),
                        "time": seconds / len(batch),
                        **chunk_fields(cut),
                    }
                    if nbest.scores is not None:
                        row["scores"] = list(nbest.scores)
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                audio_seconds += sum(float(cuts[c].duration) for c in batch)
                spent += seconds
                progress.update(len(batch), postfix=f"RTFx {audio_seconds / spent:.1f}")
        progress.close()
        del recogniser
        release_memory()
    rows = {row["id"]: row for row in read_rows(rows_path)}
    missing = [cut_id for cut_id in order if cut_id not in rows]
    if missing:
        raise RuntimeError(f"{rows_path}: {len(missing)} utterances missing after the stage")
    _finish(rows_path, key, len(order))
    return [rows[i] for i in order]


def release_memory() -> None:
    """Give back what a recogniser held (its CUDA cache too) before the next stage loads a
    model: the correction's ranks may share this process's GPU."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _ids_of(cut) -> list[str]:
    names = [cut.id, cut.supervisions[0].id]
    recording = getattr(cut, "recording", None)
    if recording is not None:
        names.append(recording.id)
        for source in getattr(recording, "sources", []) or []:
            if getattr(source, "type", None) == "file":
                names += [Path(source.source).name, Path(source.source).stem]
    return names


def import_first_pass(test_set: TestSet, manifest: str, rows_path: Path) -> list[dict]:
    """First-pass rows of one set from a leaderboard result manifest (see the module docstring).

    Raises:
        ValueError: a row matching no cut, a cut without a row, or an order match that fails
            (file, line and what differs).
    """
    from nemo_neko.asr.cutio import read_cuts
    from nemo_neko.eval.manifests import read_manifest
    from nemo_neko.eval.normalizer import get_normalizer
    from nemo_neko.eval.protocols import IGNORED_REFERENCE

    key = {"cuts": file_identity(test_set.cuts), "manifest": file_identity(manifest)}
    finger = _start(rows_path, key)
    cuts = read_cuts(test_set.cuts)
    order = list(cuts)
    if is_complete(rows_path, finger):
        rows = {row["id"]: row for row in read_rows(rows_path)}
        if sorted(rows) == sorted(order):
            return [rows[i] for i in order]
    manifest_rows = read_manifest(manifest)
    normalize = get_normalizer("oal2026")
    names: dict[str, str] = {}
    for cut_id, cut in cuts.items():
        for name in _ids_of(cut):
            names.setdefault(name, cut_id)
    matched: dict[str, Any] = {}
    by_id = all(row.audio_filepath in names for row in manifest_rows)
    if by_id:
        for row in manifest_rows:
            cut_id = names[row.audio_filepath]
            if cut_id in matched:
                raise ValueError(
                    f"{manifest}:{row.line}: field 'audio_filepath': {row.audio_filepath!r} "
                    f"names cut {cut_id!r} again (first on line {matched[cut_id].line})"
                )
            matched[cut_id] = row
    else:
        if len(manifest_rows) != len(order):
            unknown = next(r for r in manifest_rows if r.audio_filepath not in names)
            raise ValueError(
                f"{manifest}:{unknown.line}: field 'audio_filepath': {unknown.audio_filepath!r} "
                f"is no cut of {test_set.cuts}, and the file has {len(manifest_rows)} rows for "
                f"{len(order)} cuts, so rows cannot be matched in order either"
            )
        for cut_id, row in zip(order, manifest_rows):
            if normalize(row.text) != normalize(cuts[cut_id].supervisions[0].text):
                raise ValueError(
                    f"{manifest}:{row.line}: field 'text': matching rows to {test_set.cuts} "
                    f"in order, the reference differs from cut {cut_id!r}'s"
                )
            matched[cut_id] = row
    unscored = {
        cut_id
        for cut_id in order
        if cut_id not in matched
        and normalize(cuts[cut_id].supervisions[0].text).strip() in ("", IGNORED_REFERENCE)
    }
    if unscored:  # the leaderboard drops these before inference, so its files lack them
        print(
            f"{manifest}: {len(unscored)} cuts of {test_set.name} have no row and a reference "
            "the leaderboard never scores (empty after normalisation): left out of the set",
            flush=True,
        )
        order = [cut_id for cut_id in order if cut_id not in unscored]
    missing = [cut_id for cut_id in order if cut_id not in matched]
    if missing:
        raise ValueError(
            f"{manifest}: no row for {len(missing)} of the {len(order)} cuts of "
            f"{test_set.cuts} (first: {missing[0]!r})"
        )
    rows = []
    for cut_id in order:
        row, cut = matched[cut_id], cuts[cut_id]
        rows.append(
            {
                "id": cut_id,
                "text": cut.supervisions[0].text,
                "hypotheses": [row.pred_text],
                "duration": row.duration if row.duration is not None else float(cut.duration),
                "time": row.time,
                **chunk_fields(cut),
            }
        )
    with open(rows_path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    _finish(rows_path, key, len(rows))
    return rows
