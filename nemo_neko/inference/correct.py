"""Correct record files with a trained run: load the checkpoint, render prompts, decode, write.

    python -m nemo_neko.eval correct --run-dir runs/neko-tiny
    python -m nemo_neko.eval correct --run-dir runs/neko-tiny --records my.jsonl.gz --out preds.jsonl

Run as one process, the model is rebuilt with TP = PP = EP = 1; under torchrun or srun
(``WORLD_SIZE > 1``) with tensor and expert parallelism (``--tensor-parallel``,
``--expert-parallel``, or ``generate.tensor_parallel`` / ``expert_parallel``), the ranks left over
decoding separate shares of the records (:mod:`nemo_neko.inference.sharding`)::

    torchrun --standalone --nproc_per_node 4 -m nemo_neko.eval correct --run-dir RUN \
        --tensor-parallel 2

Megatron's distributed checkpoint reshards whatever layout the run was trained with. The model
is put in eval mode: routing is plain top-k by router probability, with no task knowledge. Prompts are the tasks' own (as in training); each
record gets at most ``min(max_new_tokens, ratio * tokens of its 1-best/source + extra)`` new tokens.

Predictions are appended to a JSONL file (``{"id", "prediction", "record", "source", "time"}``:
``time`` is the decoding seconds of the record's batch divided by its size) batch by batch; each line records the checkpoint (name, step, fingerprint) and the generation settings
it came from (:mod:`nemo_neko.inference.provenance`). A rerun with the same checkpoint and
settings skips the ids already there (a line cut short by a kill is dropped and redone); one
with another checkpoint (more training) or other settings moves the old file aside and starts
afresh. The records that were corrected are written next to the predictions, so ``report``
scores exactly those. Repeated record ids and a layout the world or the model cannot take are
refused before the model is built. The predictions, their order and the routing figures are
those of one process whatever the layout (``tests/inference/test_correct_parallel.py``).
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
from nemo_neko.inference.sharding import (
    generation_layout,
    merge_parts,
    part_files,
    part_path,
    share_of_chunk,
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


def load_corrector(run_dir: str | Path, checkpoint: Path | None = None, parallel=None):
    """(model in eval mode, tokenizer, run config) from a run directory's checkpoint (default:
    its latest).

    ``parallel``: the :class:`~nemo_neko.parallel.ParallelContext` to load into (its layout:
    TP and EP, sequence parallelism off); None starts a world of one (TP = PP = EP = 1). The
    model is built with the vocabulary the checkpoint stores (padded as it was trained).
    """
    from nemo_neko.compat.megatron import checkpoint_tensors
    from nemo_neko.config import load_run_config
    from nemo_neko.data.tokenizer import TextTokenizer
    from nemo_neko.inference.sharding import check_vocab
    from nemo_neko.model.checkpoint import Checkpointer
    from nemo_neko.parallel import ParallelLayout, initialize_parallel

    paths = RunPaths(run_dir)
    run = load_run_config(paths.config)
    checkpoint = checkpoint or latest_checkpoint(run_dir)
    if parallel is None:
        parallel = initialize_parallel(
            ParallelLayout(),
            seed=run.seed,
            num_experts=run.model.num_experts,
            num_layers=run.model.num_layers,
        )
    layout = parallel.layout
    run.model.parallel = layout
    stored = checkpoint_tensors(str(checkpoint)).get("embedding.word_embeddings.weight")
    vocab_size = stored[0][0] if stored else None
    if vocab_size is not None:
        check_vocab(vocab_size, layout.tensor, checkpoint)
    tokenizer = TextTokenizer.from_dir(paths.tokenizer)
    neko = run.model.build(
        routing=run.task_routing(),
        parallel=parallel,
        tokenizer_vocab=tokenizer.vocab_size,
        vocab_size=vocab_size,
        max_sequence_length=run.data.seq_length,
        use_te=False,
    )
    (model,) = neko.chunks
    Checkpointer(paths.checkpoints).load(checkpoint, [model])
    model.eval()
    log.info("loaded %s", checkpoint)
    return model, tokenizer, run


def prepare_output(out: Path, source: dict, digests: dict[str, str], records) -> set[str]:
    """Ids of ``out`` to keep, after merging the parts a killed run left beside it and moving
    aside predictions of another checkpoint or settings; writes the records beside ``out``.
    One process only (rank 0)."""
    from nemo_neko.inference.provenance import read_lines

    orphans, fresh = part_files(out), []
    for part in orphans:  # parts of another checkpoint or settings are kept aside, not merged
        if all(
            item.get("source") == source and digests.get(item["id"]) == item.get("record")
            for item in read_lines(part)
        ):
            fresh.append(part)
            continue
        aside = part.with_name(part.name.replace(".part-", ".stale-part-", 1))
        os.replace(part, aside)
        print(
            f"{part}: predictions of another checkpoint, settings or records: moved to {aside}",
            flush=True,
        )
    finished = resume(out, source, digests)
    if fresh:
        merged = merge_parts(out, fresh)
        print(
            f"{out}: merged {merged} predictions from {len(fresh)} part file(s) of an "
            f"interrupted run",
            flush=True,
        )
        finished = done_ids(out)
    write_records(records_beside(out), records)
    return finished


def _on_rank_zero(parallel, fn, *args):
    """``fn(*args)`` on global rank 0, its result (or its error, raised on every rank) sent to
    every rank of the world."""
    import torch.distributed as dist

    result = [None, None]
    if parallel.rank == 0:
        try:
            result = [fn(*args), None]
        except (ValueError, OSError) as err:
            result = [None, err]
    dist.broadcast_object_list(result, src=0)
    if result[1] is not None:
        raise result[1]
    return result[0]


def correct_records(
    run_dir: str | Path,
    record_paths: list[str] | None = None,
    out: str | Path | None = None,
    limit_per_dataset: int | None = None,
    batch_size: int | None = None,
    tensor_parallel: int | None = None,
    expert_parallel: int | None = None,
    pipeline_parallel: int | None = None,
) -> Path:
    """Write predictions for the records (default: the run's held-out sets); returns the file.

    Everything that can be wrong with the inputs (run config, checkpoint, layout, record files,
    repeated ids) is checked before the model is built; predictions of another checkpoint or
    other settings in ``out`` are moved aside, never resumed (:mod:`.provenance`). Under
    torchrun/srun every rank calls it; the sizes default to the run config's ``generate``.
    """
    from nemo_neko.config import load_run_config

    paths = RunPaths(run_dir)
    run = load_run_config(paths.config)
    checkpoint = latest_checkpoint(run_dir)
    generate = run.generate
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    layout = generation_layout(
        run.model,
        world_size,
        tensor=tensor_parallel or generate.tensor_parallel,
        expert=expert_parallel or generate.expert_parallel,
        pipeline=pipeline_parallel or generate.pipeline_parallel,
    )
    record_files = record_paths or [p for spec in run.data.test for p in spec.paths]
    limit = limit_per_dataset if limit_per_dataset is not None else generate.max_records_per_dataset
    every_record = read_records(record_files)
    check_unique_ids(every_record, record_files)
    records = select_records(every_record, limit)
    if not records:
        raise ValueError(f"{', '.join(map(str, record_files))}: no records to correct")
    out = Path(out) if out else paths.predictions
    source = prediction_source(checkpoint, run)
    digests = {r.id: record_digest(r) for r in records}
    parallel = None
    if world_size > 1:
        from nemo_neko.parallel import initialize_parallel

        parallel = initialize_parallel(
            layout,
            seed=run.seed,
            num_experts=run.model.num_experts,
            num_layers=run.model.num_layers,
            training=False,
        )
        finished = _on_rank_zero(parallel, prepare_output, out, source, digests, records)
    else:
        finished = prepare_output(out, source, digests, records)
    rank = parallel.rank if parallel else 0
    todo = [r for r in records if r.id not in finished]
    if rank == 0:
        shown = f", TP={layout.tensor} EP={layout.expert} on {world_size} ranks" if parallel else ""
        print(
            f"correcting {len(todo)} records ({len(finished)} already done) with "
            f"{describe_source(source)}{shown} -> {out}",
            flush=True,
        )
    if not todo:
        if rank == 0:
            write_prediction_routing(out, records, run)
        return out
    model, tokenizer, run = load_corrector(run_dir, checkpoint, parallel)
    _decode(model, tokenizer, run, todo, out, source, digests, parallel, batch_size, len(records))
    if parallel is not None:
        import torch.distributed as dist

        dist.barrier()  # every part file is complete
        if rank == 0:
            merge_parts(out, part_files(out))
    path = write_prediction_routing(out, records, run) if rank == 0 else None
    if path is not None:
        print(f"routing of the corrected records' prompts -> {path}", flush=True)
    return out


def _decode(model, tokenizer, run, todo, out, source, digests, parallel, batch_size, total):
    """Decode this rank's share of ``todo`` and append its lines (see the module docstring of
    :mod:`.sharding` for who decodes and writes what)."""
    from nemo_neko.inference.generate import KVCacheDecoder
    from nemo_neko.inference.routing import RoutingCounter
    from nemo_neko.utils.progress import Progress

    shares, share, writer, group, ep_group, copies = 1, 0, True, None, None, 1
    if parallel is not None:
        import torch.distributed as dist

        shares, share = dist.get_world_size(parallel.expt_dp), dist.get_rank(parallel.expt_dp)
        writer = dist.get_rank(parallel.expt_mp) == 0
        group, ep_group = parallel.expt_mp, parallel.ep
        copies = parallel.layout.tensor * parallel.layout.expert
    generate = run.generate
    decoder = KVCacheDecoder(
        model, tokenizer.eos_id, tokenizer.pad_id, generate.no_repeat_ngram_size, group=group
    )
    builder = SampleBuilder(
        tokenizer, run.data.seq_length, run.data.prompt_format, run.data.system_prompt
    )
    prompts, limits = {}, {}
    for record in todo:
        baseline = len(tokenizer.encode(get_task(record.task).baseline(record)))
        limit = int(generate.new_tokens_per_input_token * baseline) + generate.extra_new_tokens
        limits[record.id] = min(generate.max_new_tokens, limit)
        prompts[record.id] = builder.inference_prompt(record, reserve=limits[record.id] + 1)
    todo = sorted(todo, key=lambda r: len(prompts[r.id]))  # similar prompts: short prefill gaps
    batch = batch_size or generate.batch_size
    chunk_size = batch * 2
    starts = range(0, len(todo), chunk_size)
    mine = [s for c, s in enumerate(starts) if share_of_chunk(c, shares) == share]
    target = out if shares == 1 else part_path(out, share, shares)
    counter = RoutingCounter(model, chunk_size, group=ep_group, copies=copies)
    progress = None
    if parallel is None or parallel.rank == 0:
        mine_total = sum(len(todo[s : s + chunk_size]) for s in mine)
        desc = "correct" if shares == 1 else f"correct (share 1 of {shares})"
        done = total - len(todo)
        progress = Progress(done + mine_total, desc=desc, unit="records", done=done, interval=20.0)
    with counter, open(target, "a", encoding="utf-8") if writer else _nothing() as fh:
        for chunk_start in mine:
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
            if writer:
                for j, (record, generation, routing) in enumerate(zip(chunk, generations, routed)):
                    line = {
                        "id": record.id,
                        "prediction": tokenizer.decode(generation.tokens).strip(),
                        "record": digests[record.id],
                        "source": source,
                        "time": seconds,
                    }
                    if routing is not None:
                        line["routing"] = routing
                    if shares > 1:
                        line["order"] = chunk_start + j
                    fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            if progress is not None:
                progress.update(len(chunk))
    if progress is not None:
        progress.close()


def _nothing():
    import contextlib

    return contextlib.nullcontext()


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
