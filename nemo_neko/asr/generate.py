"""N-best generation over a cut manifest: sharded, checkpointed per batch, resumable, idempotent.

One shard of one manifest (``generate_nbest``)::

    1. scan and check the whole input manifest, plan duration-sorted batches
       (nemo_neko.asr.sharding), keep the batches this shard owns
    2. <stem>.job.json of the same options and outputs complete?  -> nothing to do
    3. <out>/.<stem>.parts/: plan.json (options fingerprint) + one batch-<j>.cuts.jsonl.gz per
       finished batch, each written atomically; finished batches are skipped
    4. recognise the remaining batches (progress bar: utterances/s, RTFx), write their parts
    5. merge the parts, sorted by cut id, into <out>/<stem>.cuts.jsonl.gz, write
       <out>/<stem>.records.jsonl.gz from that file with the lhotse importer, then
       <out>/<stem>.job.json (the options fingerprint: "complete"), then remove the parts

``<stem>`` is ``<name>`` for an unsharded run and ``<name>.shard-0000i-of-0000N`` for a shard;
``merge_shards`` joins the shard outputs into ``<name>.cuts.jsonl.gz`` / ``.records.jsonl.gz``,
byte-identical to the unsharded run's files (same batches, same per-batch seeds, same sort).
A process killed at any point and started again with the same options finishes with the same
files, nothing missing and nothing duplicated; started with different options it stops and says
so instead of mixing outputs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nemo_neko.asr.backends import backend_class, build_backend
from nemo_neko.asr.backends.base import Backend
from nemo_neko.asr.cutio import attach_nbest, load_audio, nbest_of, read_cuts, scan_cuts, write_cuts
from nemo_neko.asr.nbest import finalize_nbest, known_policies
from nemo_neko.asr.progress import Throughput
from nemo_neko.asr.sharding import Shard, batch_seed, fingerprint, plan_batches
from nemo_neko.utils.files import write_json_atomic
from nemo_neko.utils.progress import Progress

log = logging.getLogger(__name__)

__all__ = ["GenerateConfig", "GenerateReport", "generate_nbest", "merge_shards", "output_paths"]


@dataclass
class GenerateConfig:
    """One N-best generation job (one shard of one manifest)."""

    cuts: str
    """Input cut manifest (one supervision per cut, e.g. a recipe's ``<corpus>_cuts_<part>``)."""
    out_dir: str
    """Output folder."""
    name: str
    """Output file stem (e.g. ``librispeech_train-clean-100``)."""
    dataset: str
    """Dataset name of the records (the unit that gets its own expert)."""
    backend: str = "canary"
    """A registered backend (``canary``, ``pocketsphinx``)."""
    backend_options: dict[str, Any] = field(default_factory=dict)
    """The backend's own options (model, method, temperature, ...)."""
    n: int = 5
    """Hypotheses per utterance."""
    duplicates: str = "keep"
    """Duplicate policy: ``keep`` or ``unique_pad`` (see :mod:`nemo_neko.asr.nbest`)."""
    batch_size: int = 16
    max_batch_seconds: float | None = None
    """Most padded audio seconds per batch (``batch length x longest utterance``)."""
    seed: int = 0
    shard: Shard = field(default_factory=Shard)
    progress_interval: float = 30.0
    """Seconds between progress lines when stderr is not a terminal."""

    def validate(self) -> None:
        if self.duplicates not in known_policies():
            raise ValueError(
                f"unknown duplicate policy {self.duplicates!r} (known: {', '.join(known_policies())})"
            )
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        backend_class(self.backend)  # unknown names fail here, before any work
        if self.backend_options.get("n", self.n) != self.n:
            raise ValueError(
                f"backend option n={self.backend_options['n']} differs from n={self.n}: give it once"
            )

    def resume_key(self) -> dict[str, Any]:
        """Everything a shard's output depends on (compared when resuming)."""
        keys = ("cuts", "dataset", "backend", "backend_options", "n", "duplicates", "seed")
        out = {k: getattr(self, k) for k in keys}
        out.update(
            cuts=os.path.abspath(self.cuts),
            batch_size=self.batch_size,
            max_batch_seconds=self.max_batch_seconds,
            shard=asdict(self.shard),
        )
        return out


@dataclass
class GenerateReport:
    """What one run did."""

    cuts_path: Path
    records_path: Path
    utterances: int
    """Utterances of this shard."""
    resumed: int = 0
    """Utterances found finished from an earlier run."""
    skipped: bool = False
    """The shard's outputs were already complete: nothing was done."""
    throughput: Throughput = field(default_factory=Throughput)


def output_paths(out_dir: str | Path, name: str, shard: Shard) -> tuple[Path, Path, Path]:
    """``(cuts manifest, records file, parts folder)`` of one shard."""
    stem = name if not shard.tag else f"{name}.{shard.tag}"
    out = Path(out_dir)
    return out / f"{stem}.cuts.jsonl.gz", out / f"{stem}.records.jsonl.gz", out / f".{stem}.parts"


def _write_records(cuts_path: Path, records_path: Path, dataset: str) -> int:
    from nemo_neko.data.importers.lhotse_cuts import import_lhotse_cuts
    from nemo_neko.data.records import write_records

    return write_records(records_path, import_lhotse_cuts(cuts_path, dataset=dataset))


def _complete(path: Path, ids: list[str]) -> bool:
    """Whether a cuts manifest holds exactly ``ids`` (any order), each with an N-best list."""
    if not path.is_file():
        return False
    try:
        cuts = read_cuts(path)
    except Exception as err:  # a damaged file is redone, with the reason logged
        log.warning("%s: unreadable (%s); it will be rebuilt", path, err)
        return False
    if sorted(cuts) != sorted(ids) or any(nbest_of(c) is None for c in cuts.values()):
        log.warning("%s: does not hold this shard's utterances with N-best lists; rebuilding", path)
        return False
    return True


def _records_complete(path: Path, count: int) -> bool:
    from nemo_neko.data.records import read_records

    if not path.is_file():
        return False
    try:
        return len(read_records(path)) == count
    except Exception as err:
        log.warning("%s: unreadable (%s); it will be rebuilt", path, err)
        return False


def _start_parts(parts_dir: Path, key: dict[str, Any]) -> None:
    """Create the parts folder with its plan.json, or check an existing one was the same job."""
    plan_file = parts_dir / "plan.json"
    stamp = {"fingerprint": fingerprint(key), "job": key}
    if plan_file.is_file():
        previous = json.loads(plan_file.read_text())
        if previous.get("fingerprint") != stamp["fingerprint"]:
            raise RuntimeError(
                f"{parts_dir} holds partial results of a different job ({plan_file}: "
                f"{previous.get('job')}); rerun with the same options, or delete that folder"
            )
        return
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_file, stamp, indent=1, sort_keys=True)


def _part_path(parts_dir: Path, batch_index: int) -> Path:
    return parts_dir / f"batch-{batch_index:08d}.cuts.jsonl.gz"


def generate_nbest(config: GenerateConfig, backend: Backend | None = None) -> GenerateReport:
    """Run (or resume, or skip) one shard of N-best generation (see the module docstring).

    Args:
        config: the job.
        backend: an already built backend (default: built from ``config`` when work remains).

    Returns:
        What was done, with this run's utterances/s and RTFx.

    Raises:
        RecordError: a broken input cut (manifest, line, field).
        RuntimeError: partial results of a different job in the parts folder.
    """
    config.validate()
    cuts_path, records_path, parts_dir = output_paths(config.out_dir, config.name, config.shard)
    infos = scan_cuts(config.cuts)
    duration = {info.id: info.duration for info in infos}
    plan = plan_batches(
        [(i.id, i.duration) for i in infos], config.batch_size, config.max_batch_seconds
    )
    mine = [j for j in range(len(plan)) if config.shard.owns(j)]
    my_ids = [cut_id for j in mine for cut_id in plan[j]]
    report = GenerateReport(cuts_path, records_path, utterances=len(my_ids))

    key = config.resume_key()
    job_path = cuts_path.with_name(cuts_path.name.replace(".cuts.jsonl.gz", ".job.json"))
    if job_path.is_file():
        done = json.loads(job_path.read_text())
        if done.get("fingerprint") != fingerprint(key):
            raise RuntimeError(
                f"{cuts_path} was made by a different job ({job_path}: {done.get('job')}); "
                "use another --name or --out-dir, or delete those outputs"
            )
        if _complete(cuts_path, my_ids) and _records_complete(records_path, len(my_ids)):
            report.skipped, report.resumed = True, len(my_ids)
            log.info("%s: complete (%d utterances), nothing to do", cuts_path, len(my_ids))
            return report

    _start_parts(parts_dir, key)
    todo = []
    for j in mine:
        part = _part_path(parts_dir, j)
        if _complete(part, plan[j]):
            report.resumed += len(plan[j])
        else:
            part.unlink(missing_ok=True)
            todo.append(j)
    if report.resumed:
        log.info(
            "%s: resuming, %d of %d utterances already done", parts_dir, report.resumed, len(my_ids)
        )

    if todo:
        if backend is None:
            backend = build_backend(config.backend, {"n": config.n, **config.backend_options})
        cuts = read_cuts(config.cuts, {cut_id for j in todo for cut_id in plan[j]})
        desc = f"{config.name} {config.shard.tag or ''}".strip()
        progress = Progress(
            len(my_ids),
            desc=desc,
            unit="utt",
            done=report.resumed,
            interval=config.progress_interval,
        )
        throughput = report.throughput
        for j in todo:
            batch = [cuts[cut_id] for cut_id in plan[j]]
            audio = [load_audio(cut) for cut in batch]
            results = backend.recognize(audio, seed=batch_seed(config.seed, j))
            if len(results) != len(batch):
                raise RuntimeError(
                    f"backend returned {len(results)} N-best lists for {len(batch)} cuts"
                )
            annotated = [
                attach_nbest(
                    cut, finalize_nbest(nbest, config.n, config.duplicates), backend.method
                )
                for cut, nbest in zip(batch, results)
            ]
            write_cuts(_part_path(parts_dir, j), annotated)
            throughput.utterances += len(batch)
            throughput.audio_seconds += sum(duration[c.id] for c in batch)
            throughput.wall_seconds = progress.elapsed
            progress.update(len(batch), postfix=throughput.postfix())
        throughput.wall_seconds = progress.close()

    merged = {}
    for j in mine:
        merged.update(read_cuts(_part_path(parts_dir, j)))
    write_cuts(cuts_path, (merged[cut_id] for cut_id in sorted(merged)))
    _write_records(cuts_path, records_path, config.dataset)
    stamp = {"fingerprint": fingerprint(key), "job": key, "utterances": len(my_ids)}
    write_json_atomic(job_path, stamp, indent=1, sort_keys=True)  # last: the outputs are complete
    shutil.rmtree(parts_dir)
    return report


def merge_shards(out_dir: str | Path, name: str, count: int, dataset: str) -> tuple[Path, Path]:
    """Join the outputs of shards ``0..count-1`` into ``<name>.cuts.jsonl.gz`` and its records.

    Raises:
        FileNotFoundError: a shard is not finished (all unfinished shards named).
        ValueError: a cut id in two shards.
    """
    paths = [output_paths(out_dir, name, Shard(i, count))[0] for i in range(count)]
    jobs = [p.with_name(p.name.replace(".cuts.jsonl.gz", ".job.json")) for p in paths]
    missing = [str(p) for p, job in zip(paths, jobs) if not (p.is_file() and job.is_file())]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {count} shards not finished (no output or no .job.json): "
            + ", ".join(missing)
        )
    merged: dict[str, Any] = {}
    for path in paths:
        for cut_id, cut in read_cuts(path).items():
            if cut_id in merged:
                raise ValueError(f"{path}: cut {cut_id!r} is also in another shard's output")
            merged[cut_id] = cut
    cuts_path, records_path, _ = output_paths(out_dir, name, Shard())
    write_cuts(cuts_path, (merged[cut_id] for cut_id in sorted(merged)))
    _write_records(cuts_path, records_path, dataset)
    return cuts_path, records_path
