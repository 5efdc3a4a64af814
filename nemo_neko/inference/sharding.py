"""``correct`` over many ranks: the generation layout, the records' shares and the part files.

Under torchrun or srun (``WORLD_SIZE > 1``) the world is cut into model replicas of TP x EP
ranks (pipeline parallelism is refused: :func:`generation_layout`) and ``world / (TP x EP)``
data-parallel shares of the records. The ranks of one replica run the same batches in lockstep
(tensor parallelism's collectives and expert parallelism's all-to-all need every rank in every
forward); its first rank writes. The records are decoded in chunks of similar prompt length
(sorted once, as in one process); chunk ``c`` goes to share :func:`share_of_chunk` ``(c)``, in a
back-and-forth order (0, 1, ..., n-1, n-1, ..., 1, 0, 0, 1, ...), so that every share gets short
and long prompts alike.

With more than one share, each share's writer appends its lines to its own part file beside the
predictions (``predictions.part-001-of-004.jsonl``), each line with its chunk order
(``"order"``, its place in the length-sorted list); at the end rank 0 merges them in that order
into the predictions file (the line format of one process: ``order`` dropped) and removes them.
Parts a killed run left behind are merged the same way when the next run starts, before its
predictions are checked (:func:`nemo_neko.inference.provenance.resume`): a prediction of theirs
already in the file is not written twice, and nothing of another checkpoint is resumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nemo_neko.parallel.layout import LayoutError, ParallelLayout

__all__ = [
    "generation_layout",
    "merge_parts",
    "part_files",
    "part_path",
    "share_of_chunk",
]


def generation_layout(
    model, world_size: int, tensor: int = 1, expert: int = 1, pipeline: int = 1
) -> ParallelLayout:
    """The layout ``correct`` loads ``model`` (a ``ModelConfig``) with on ``world_size`` ranks.

    Sequence parallelism is off (a decode step is one token per row: there is no sequence to
    split). Checked without torch, before anything is started or built.

    Raises:
        LayoutError: one line naming the broken rule.
    """
    for name, value in (("tensor", tensor), ("expert", expert), ("pipeline", pipeline)):
        if not isinstance(value, int) or value < 1:
            raise LayoutError(f"{name} parallel size must be a positive int, got {value!r}")
    if pipeline > 1:
        raise LayoutError(
            f"pipeline parallel size PP={pipeline}: correct does not split the model into "
            f"pipeline stages (its KV-cache decoder runs one token at a time through every layer "
            f"on each rank); use tensor/expert parallelism, the checkpoint is resharded from any "
            f"training layout"
        )
    replica = tensor * expert
    if world_size % replica:
        raise LayoutError(
            f"world size {world_size} is not divisible by TP x EP = {tensor} x {expert} = "
            f"{replica} (the ranks of one model replica): start correct under torchrun/srun "
            f"with a multiple of {replica} ranks"
        )
    experts = model.num_experts or None
    rules = [
        ("num_attention_heads", model.num_attention_heads, tensor, "TP"),
        ("key/value heads", model.query_groups, tensor, "TP"),
    ]
    if experts:
        rules += [
            ("num_experts", experts, expert, "EP"),
            ("moe_ffn_hidden_size", model.moe_ffn_hidden_size, tensor, "TP"),
            ("shared expert size", model.moe_shared_expert_intermediate_size or 0, tensor, "TP"),
        ]
    elif expert > 1:
        raise LayoutError(
            f"model {model.name!r} is dense: expert parallelism EP={expert} needs experts"
        )
    dense_ffn = any(not model.is_moe_layer(i) for i in range(model.num_layers))
    if dense_ffn:
        rules.append(("ffn_hidden_size", model.ffn_hidden_size, tensor, "TP"))
    for what, size, divisor, name in rules:
        if size % divisor:
            raise LayoutError(
                f"model {model.name!r} cannot be loaded with {name}={divisor}: {what}={size} is "
                f"not divisible by {divisor}"
            )
    layout = ParallelLayout(tensor=tensor, expert=expert, sequence_parallel=False)
    layout.check(world_size, num_experts=experts, num_layers=model.num_layers, training=False)
    return layout


def check_vocab(padded_vocab: int, tensor: int, checkpoint) -> None:
    """The stored (padded) vocabulary must split evenly over the TP ranks."""
    if padded_vocab % tensor:
        raise LayoutError(
            f"{checkpoint}: its embedding has {padded_vocab} rows, not divisible by TP={tensor} "
            f"(the vocabulary is split over the tensor-parallel ranks)"
        )


def share_of_chunk(chunk: int, shares: int) -> int:
    """The data-parallel share that decodes length-sorted chunk ``chunk`` (back and forth)."""
    turn, place = divmod(chunk, shares)
    return place if turn % 2 == 0 else shares - 1 - place


def part_path(out: Path, share: int, shares: int) -> Path:
    """``predictions.part-001-of-004.jsonl``: share ``share``'s part file beside ``out``."""
    return out.with_name(f"{out.stem}.part-{share + 1:03d}-of-{shares:03d}{out.suffix}")


def part_files(out: Path) -> list[Path]:
    """The part files beside ``out`` (this run's or a killed run's), sorted by name."""
    return sorted(out.parent.glob(f"{out.stem}.part-*-of-*{out.suffix}"))


def merge_parts(out: Path, parts: list[Path]) -> int:
    """Append the lines of ``parts`` to ``out`` in their ``order``, without ``order``, skipping ids
    ``out`` already holds; then remove the parts. Returns the number of lines appended.

    Torn last lines (a killed writer) are dropped; a rank killed during the merge leaves the
    parts in place, and the next merge skips what it had already appended.
    """
    from nemo_neko.inference.provenance import read_lines

    if not parts:
        return 0
    have = {item["id"] for item in read_lines(out)}
    items = [item for part in parts for item in read_lines(part) if item["id"] not in have]
    items.sort(key=lambda item: item.get("order", 0))
    written = set()
    with open(out, "a", encoding="utf-8") as fh:
        for item in items:
            if item["id"] in written:
                continue
            written.add(item["id"])
            item.pop("order", None)
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    for part in parts:
        part.unlink()
    return len(written)
