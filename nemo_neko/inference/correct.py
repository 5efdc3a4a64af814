"""Correct record files with a trained run: load the checkpoint, render prompts, decode, write.

    python -m nemo_neko.eval correct --run-dir runs/neko-tiny
    python -m nemo_neko.eval correct --run-dir runs/neko-tiny --records my.jsonl.gz --out preds.jsonl

The model is rebuilt in one process (TP = PP = EP = 1; Megatron's distributed checkpoint
reshards whatever layout it was trained with) and put in eval mode: routing is plain top-k by
router probability, with no task knowledge. Prompts are the tasks' own (as in training); each
record gets at most ``min(max_new_tokens, ratio * tokens of its 1-best/source + extra)`` new tokens.

Predictions are appended to a JSONL file (``{"id", "prediction", "record", "source", "time"}``:
``time`` is the decoding seconds of the record's batch divided by its size) batch by batch; each line records the checkpoint (name, step, fingerprint) and the generation settings
it came from (:mod:`nemo_neko.inference.provenance`). A rerun with the same checkpoint and
settings skips the ids already there (a line cut short by a kill is dropped and redone); one
with another checkpoint (more training) or other settings moves the old file aside and starts
afresh. The records that were corrected are written next to the predictions, so ``report``
scores exactly those. Repeated record ids are refused before the model is built.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

from nemo_neko.data.records import CorrectionRecord, read_records, write_records
from nemo_neko.data.samples import SampleBuilder
from nemo_neko.inference.provenance import (
    describe_source,
    done_ids,
    prediction_source,
    record_digest,
    resume,
)
from nemo_neko.paths import RunPaths, records_beside, routing_beside
from nemo_neko.tasks import get_task

__all__ = ["check_unique_ids", "correct_records", "done_ids", "load_corrector", "select_records"]

log = logging.getLogger(__name__)


def select_records(
    records: list[CorrectionRecord], limit_per_dataset: int | None
) -> list[CorrectionRecord]:
    """The first ``limit_per_dataset`` records of each dataset (all when None or 0)."""
    if not limit_per_dataset:
        return records
    seen: dict[str, int] = defaultdict(int)
    chosen = []
    for record in records:
        if seen[record.dataset] < limit_per_dataset:
            chosen.append(record)
            seen[record.dataset] += 1
    return chosen


def check_unique_ids(records: list[CorrectionRecord], record_files: list[str]) -> None:
    """Raise ``ValueError`` listing ids that appear twice: predictions are joined by id."""
    counts = Counter(record.id for record in records)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        shown = ", ".join(repr(i) for i in repeated[:10])
        more = f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        raise ValueError(
            f"{', '.join(map(str, record_files))}: {len(repeated)} record id(s) appear more than "
            f"once ({shown}{more}); predictions are joined to records by id, so ids must be "
            f"unique across the files (import them with distinct datasets or id prefixes)"
        )


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The run's latest checkpoint, checked complete (shards included) before anything loads."""
    from nemo_neko.model.checkpoint_files import read_latest

    checkpoints = RunPaths(run_dir).checkpoints
    checkpoint = read_latest(checkpoints, shards=True)
    if checkpoint is None:
        raise FileNotFoundError(
            f"{checkpoints}: no checkpoint to correct with (train the run first: "
            f"stages=[train,correct,report])"
        )
    return checkpoint


def load_corrector(run_dir: str | Path, checkpoint: Path | None = None):
    """(model in eval mode, tokenizer, run config) from a run directory's checkpoint (default:
    its latest)."""
    from nemo_neko.config import load_run_config
    from nemo_neko.data.tokenizer import TextTokenizer
    from nemo_neko.model.checkpoint import Checkpointer
    from nemo_neko.parallel import ParallelLayout, initialize_parallel

    paths = RunPaths(run_dir)
    run = load_run_config(paths.config)
    checkpoint = checkpoint or latest_checkpoint(run_dir)
    layout = ParallelLayout()
    run.model.parallel = layout
    parallel = initialize_parallel(
        layout, seed=run.seed, num_experts=run.model.num_experts, num_layers=run.model.num_layers
    )
    tokenizer = TextTokenizer.from_dir(paths.tokenizer)
    neko = run.model.build(
        routing=run.task_routing(),
        parallel=parallel,
        tokenizer_vocab=tokenizer.vocab_size,
        max_sequence_length=run.data.seq_length,
        use_te=False,
    )
    (model,) = neko.chunks
    Checkpointer(paths.checkpoints).load(checkpoint, [model])
    model.eval()
    log.info("loaded %s", checkpoint)
    return model, tokenizer, run


def correct_records(
    run_dir: str | Path,
    record_paths: list[str] | None = None,
    out: str | Path | None = None,
    limit_per_dataset: int | None = None,
    batch_size: int | None = None,
) -> Path:
    """Write predictions for the records (default: the run's held-out sets); returns the file.

    Everything that can be wrong with the inputs (run config, checkpoint, record files, repeated
    ids) is checked before the model is built; predictions of another checkpoint or other
    settings in ``out`` are moved aside, never resumed (:mod:`nemo_neko.inference.provenance`).
    """
    from nemo_neko.config import load_run_config

    paths = RunPaths(run_dir)
    run = load_run_config(paths.config)
    checkpoint = latest_checkpoint(run_dir)
    record_files = record_paths or [p for spec in run.data.test for p in spec.paths]
    limit = (
        limit_per_dataset if limit_per_dataset is not None else run.generate.max_records_per_dataset
    )
    every_record = read_records(record_files)
    check_unique_ids(every_record, record_files)
    records = select_records(every_record, limit)
    if not records:
        raise ValueError(f"{', '.join(map(str, record_files))}: no records to correct")
    out = Path(out) if out else paths.predictions
    source = prediction_source(checkpoint, run)
    digests = {r.id: record_digest(r) for r in records}
    finished = resume(out, source, digests)
    write_records(records_beside(out), records)
    todo = [r for r in records if r.id not in finished]
    print(
        f"correcting {len(todo)} records ({len(finished)} already done) with "
        f"{describe_source(source)} -> {out}",
        flush=True,
    )
    if not todo:
        write_prediction_routing(out, records, run)
        return out
    from nemo_neko.inference.generate import KVCacheDecoder
    from nemo_neko.inference.routing import RoutingCounter
    from nemo_neko.utils.progress import Progress

    model, tokenizer, run = load_corrector(run_dir, checkpoint)
    decoder = KVCacheDecoder(
        model, tokenizer.eos_id, tokenizer.pad_id, run.generate.no_repeat_ngram_size
    )
    builder = SampleBuilder(
        tokenizer, run.data.seq_length, run.data.prompt_format, run.data.system_prompt
    )
    prompts, limits = {}, {}
    for record in todo:
        baseline = len(tokenizer.encode(get_task(record.task).baseline(record)))
        limit = int(run.generate.new_tokens_per_input_token * baseline)
        limit += run.generate.extra_new_tokens
        limits[record.id] = min(run.generate.max_new_tokens, limit)
        prompts[record.id] = builder.inference_prompt(record, reserve=limits[record.id] + 1)
    todo.sort(key=lambda r: len(prompts[r.id]))  # batches of similar prompts: a short prefill gap
    batch = batch_size or run.generate.batch_size
    chunk_size = batch * 2
    counter = RoutingCounter(model, chunk_size)
    progress = Progress(
        len(records), desc="correct", unit="records", done=len(finished), interval=20.0
    )
    with counter, open(out, "a", encoding="utf-8") as fh:
        for chunk_start in range(0, len(todo), chunk_size):
            chunk = todo[chunk_start : chunk_start + chunk_size]
            started = time.perf_counter()
            generations = decoder.generate(
                [prompts[r.id] for r in chunk],
                [limits[r.id] for r in chunk],
                batch,
                labels=list(range(len(chunk))),
                num_labels=chunk_size,
            )
            seconds = (time.perf_counter() - started) / len(chunk)  # the leaderboard's share
            routed = counter.take(len(chunk)) if counter.layers else [None] * len(chunk)
            for record, generation, routing in zip(chunk, generations, routed):
                text = tokenizer.decode(generation.tokens).strip()
                line = {
                    "id": record.id,
                    "prediction": text,
                    "record": digests[record.id],
                    "source": source,
                    "time": seconds,
                }
                if routing is not None:
                    line["routing"] = routing
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            progress.update(len(chunk))
    progress.close()
    path = write_prediction_routing(out, records, run)
    if path is not None:
        print(f"routing of the corrected records' prompts -> {path}", flush=True)
    return out


def write_prediction_routing(out: Path, records, run) -> Path | None:
    """Sum the per-record routing of every line in ``out`` into the routing summary beside it
    (``X.jsonl`` -> ``X.routing.json``); None for a dense model."""
    from nemo_neko.inference.routing import routing_figures, write_routing

    if not run.model.num_experts:
        return None

    dataset_of = {r.id: r.dataset for r in records}
    lines = []
    for text in out.read_text(encoding="utf-8").splitlines():
        item = json.loads(text)
        if item["id"] in dataset_of and item.get("routing") is not None:
            lines.append((dataset_of[item["id"]], item["routing"]))
    routing = run.task_routing()
    figures = routing_figures(
        lines,
        datasets=list(dict.fromkeys(r.dataset for r in records)),
        layers=[i + 1 for i in range(run.model.num_layers) if run.model.is_moe_layer(i)],
        experts=run.model.num_experts,
        training_expert=dict(zip(routing.task_names, routing.task_to_expert)),
    )
    return write_routing(routing_beside(out), figures)
