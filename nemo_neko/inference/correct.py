"""Correct record files with a trained run: load the checkpoint, render prompts, decode, write.

    python -m nemo_neko.eval correct --run-dir runs/neko-tiny
    python -m nemo_neko.eval correct --run-dir runs/neko-tiny --records my.jsonl.gz --out preds.jsonl

The model is rebuilt in one process (TP = PP = EP = 1; Megatron's distributed checkpoint
reshards whatever layout it was trained with) and put in eval mode: routing is plain top-k by
router probability, with no task knowledge. Prompts are the tasks' own (as in training); each
record gets at most ``min(max_new_tokens, ratio * tokens of its 1-best/source + 16)`` new tokens.

Predictions are appended to a JSONL file (``{"id", "prediction"}``) batch by batch; a rerun
skips the ids already there (a line cut short by a kill is dropped and redone). The records that
were corrected are written next to the predictions, so ``report`` scores exactly those.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

from nemo_neko.data.records import CorrectionRecord, read_records, write_records
from nemo_neko.data.samples import SampleBuilder
from nemo_neko.paths import RunPaths, records_beside
from nemo_neko.tasks import get_task

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


def done_ids(path: Path) -> set[str]:
    """Ids already in a predictions file; a torn last line (killed run) is cut off."""
    if not path.exists():
        return set()
    ids, good_bytes = set(), 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                item = json.loads(raw)
                if not raw.endswith(b"\n"):
                    raise ValueError("torn line")
            except ValueError:
                break
            ids.add(item["id"])
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        log.warning("%s: dropping a torn last line left by an interrupted run", path)
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return ids


def load_corrector(run_dir: str | Path):
    """(model in eval mode, tokenizer, run config) from a run directory's latest checkpoint."""
    from nemo_neko.config import load_run_config
    from nemo_neko.data.tokenizer import TextTokenizer
    from nemo_neko.model.checkpoint import Checkpointer
    from nemo_neko.parallel import ParallelLayout, initialize_parallel

    paths = RunPaths(run_dir)
    run = load_run_config(paths.config)
    checkpoint = Checkpointer(paths.checkpoints).latest()
    if checkpoint is None:
        raise FileNotFoundError(f"{paths.checkpoints}: no complete checkpoint to correct with")
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
    """Write predictions for the records (default: the run's held-out sets); returns the file."""
    from nemo_neko.inference.generate import KVCacheDecoder

    paths = RunPaths(run_dir)
    model, tokenizer, run = load_corrector(run_dir)
    record_files = record_paths or [p for spec in run.data.test for p in spec.paths]
    limit = (
        limit_per_dataset if limit_per_dataset is not None else run.generate.max_records_per_dataset
    )
    records = select_records(read_records(record_files), limit)
    out = Path(out) if out else paths.predictions
    write_records(records_beside(out), records)
    finished = done_ids(out)
    todo = [r for r in records if r.id not in finished]
    log.info("correcting %d records (%d already done) -> %s", len(todo), len(finished), out)
    decoder = KVCacheDecoder(model, tokenizer.eos_id, tokenizer.pad_id)
    builder = SampleBuilder(tokenizer, run.data.seq_length)
    batch = batch_size or run.generate.batch_size
    start, done = time.perf_counter(), 0
    with open(out, "a", encoding="utf-8") as fh:
        for chunk_start in range(0, len(todo), batch * 4):
            chunk = todo[chunk_start : chunk_start + batch * 4]
            prompts, limits = [], []
            for record in chunk:
                baseline = len(tokenizer.encode(get_task(record.task).baseline(record)))
                limit = int(run.generate.new_tokens_per_input_token * baseline) + 16
                limits.append(min(run.generate.max_new_tokens, limit))
                prompts.append(builder.inference_prompt(record, reserve=limits[-1] + 1))
            for record, generation in zip(chunk, decoder.generate(prompts, limits, batch)):
                text = tokenizer.decode(generation.tokens).strip()
                fh.write(
                    json.dumps({"id": record.id, "prediction": text}, ensure_ascii=False) + "\n"
                )
            fh.flush()
            os.fsync(fh.fileno())
            done += len(chunk)
            rate = done / (time.perf_counter() - start)
            print(
                f"corrected {len(finished) + done}/{len(records)} records ({rate:.1f} records/s)",
                flush=True,
            )
    return out
