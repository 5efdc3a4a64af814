"""The Megatron side of a conversion: a storage-free model skeleton, and its checkpoint read and
written one parameter chunk at a time.

The skeleton is the NeKo GPTModel that :func:`nemo_neko.model.build.build_model` builds, for the
whole model on one process (TP = PP = EP = 1, local spec), with every parameter on the ``meta``
device: it costs no memory whatever the model size, and its ``sharded_state_dict()`` names every
tensor the distributed checkpoint stores, with the checkpoint key, global shape and offset that
Megatron itself uses (layers and experts stacked, norms under the same keys as Transformer
Engine layers). A checkpoint written from it holds global (unsharded) tensors and loads under
any TP/PP/EP layout, because Megatron reshards on load.

:class:`ChunkIndex` maps each stored chunk (checkpoint key, global offset) to the parameter it
belongs to and the rows of that parameter it covers: a gated ``linear_fc1`` (``[2 * ffn, h]``)
is stored as two chunks, its gate rows and its up rows. Writing asks for those rows only.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from nemo_neko.model.config import ModelConfig

SHARDED_METADATA = {
    "distrib_optim_sharding_type": "fully_reshardable",
    "singleton_local_shards": False,
    "chained_optim_avoid_prefix": True,
}
"""What :class:`nemo_neko.model.checkpoint.Checkpointer` passes to ``sharded_state_dict``."""

_CONSTRUCTORS = (
    "empty", "zeros", "ones", "full", "rand", "randn", "randint", "arange", "tensor",
    "empty_strided", "linspace", "eye",
)  # fmt: skip


class _MetaDevice(TorchFunctionMode):
    """Every tensor constructor runs on the ``meta`` device (storage-free).

    ``torch.device("meta")`` alone is not enough here: it recognises constructors by identity,
    and the CPU shims (:mod:`nemo_neko.compat.cpu`) wrap ``torch.empty`` & co. So the original
    functions are collected through ``__wrapped__`` and matched in this mode.
    """

    def __init__(self):
        super().__init__()
        self.constructors = set()
        for name in _CONSTRUCTORS:
            fn = getattr(torch, name)
            self.constructors.add(getattr(fn, "__wrapped__", fn))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.constructors:
            kwargs["device"] = torch.device("meta")
            kwargs.pop("pin_memory", None)
        return func(*args, **kwargs)


@contextlib.contextmanager
def single_process_world(num_experts: int | None = None, num_layers: int | None = None):
    """A ``torch.distributed`` world of one process with Megatron's parallel state (TP=PP=EP=1);
    yields its :class:`~nemo_neko.parallel.ParallelContext`.

    Reuses a world that already exists (a test worker); otherwise creates one on an in-memory
    store (no TCP port) and tears it down on exit.
    """
    import torch.distributed as dist

    from nemo_neko.parallel import ParallelLayout, destroy_parallel, initialize_parallel

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    elif dist.get_world_size() != 1:
        raise RuntimeError("a conversion runs in one process (found a world of several ranks)")
    try:
        yield initialize_parallel(ParallelLayout(), num_experts=num_experts, num_layers=num_layers)
    finally:
        if created:
            destroy_parallel()


def meta_model(model: ModelConfig, padded_vocab: int, parallel):
    """The whole NeKo GPTModel of ``model`` on the meta device, in the single-process world
    ``parallel`` (:func:`single_process_world`)."""
    from nemo_neko.model.config import TransformerImpl
    from nemo_neko.moe.config import TaskRoutingConfig
    from nemo_neko.parallel import ParallelLayout

    local = copy.deepcopy(model)
    local.transformer_impl = TransformerImpl.local
    local.parallel = ParallelLayout()
    with _MetaDevice():
        neko = local.build(
            routing=TaskRoutingConfig(),
            parallel=parallel,
            vocab_size=padded_vocab,
            max_sequence_length=local.max_position_embeddings,
            device=torch.device("meta"),
            perform_initialization=False,
            use_cpu_initialization=True,
        )
    return neko.chunks[0]


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` of parameter ``param``, stored as one block of tensor ``key``.

    ``block`` is the block's shape in the stored tensor (a singleton axis for each stacked
    layer / expert axis, then ``[stop - start, *param_shape[1:]]``); ``offset`` its position.
    """

    param: str
    start: int
    stop: int
    key: str
    global_shape: tuple[int, ...]
    offset: tuple[int, ...]
    block: tuple[int, ...]


class ChunkIndex:
    """Parameters of a skeleton and the checkpoint chunks they are stored as.

    Attributes:
        shapes: parameter name -> shape (state-dict names, e.g.
            ``decoder.layers.3.mlp.experts.local_experts.5.linear_fc1.weight``).
        dtype: the parameters' dtype.
        sharded: parameter name -> its ``sharded_state_dict()`` entry (storage-free).
        chunks: ``(checkpoint key, global offset)`` -> :class:`Chunk`.
        by_param: parameter name -> its chunks, by rows.
    """

    def __init__(self, gpt):
        from nemo_neko.compat import megatron as mc

        params = {n: t for n, t in gpt.state_dict().items() if isinstance(t, torch.Tensor)}
        self.shapes = {n: tuple(t.shape) for n, t in params.items()}
        self.dtype = next(iter(params.values())).dtype
        self.sharded = gpt.sharded_state_dict(metadata=SHARDED_METADATA)
        self.chunks: dict[tuple[str, tuple[int, ...]], Chunk] = {}
        self.by_param: dict[str, list[Chunk]] = {name: [] for name in params}
        for name, entry in copy.deepcopy(self.sharded).items():
            if name not in params:
                continue
            base = entry.data
            for sh in mc.sharded_tensors_of(entry):
                start, stop = _rows_of(name, base, sh.data)
                chunk = Chunk(
                    param=name,
                    start=start,
                    stop=stop,
                    key=sh.key,
                    global_shape=tuple(sh.global_shape),
                    offset=tuple(sh.global_offset),
                    block=(1,) * sh.prepend_axis_num + tuple(sh.local_shape),
                )
                self.chunks[(chunk.key, chunk.offset)] = chunk
                self.by_param[name].append(chunk)
        missing = [name for name, chunks in self.by_param.items() if not chunks]
        if missing:
            raise RuntimeError(f"parameters without checkpoint chunks: {missing}")
        for chunks in self.by_param.values():
            chunks.sort(key=lambda c: c.start)

    def numel(self, name: str) -> int:
        return math.prod(self.shapes[name])

    def nbytes(self, name: str) -> int:
        return self.numel(name) * self.dtype.itemsize


def _rows_of(name: str, base: torch.Tensor, view: torch.Tensor) -> tuple[int, int]:
    """The rows ``[start, stop)`` of ``base`` (a parameter) that ``view`` (a chunk) covers."""
    row = math.prod(base.shape[1:]) if base.dim() > 1 else 1
    offset = view.storage_offset() - base.storage_offset()
    if base.dim() > 1 and (tuple(view.shape[-base.dim() + 1 :]) != tuple(base.shape[1:])):
        raise NotImplementedError(f"{name}: a checkpoint chunk that is not a block of rows")
    if offset % row:
        raise NotImplementedError(f"{name}: a checkpoint chunk that is not a block of rows")
    return offset // row, offset // row + view.numel() // row


def write_checkpoint(
    index: ChunkIndex,
    out_dir: str | Path,
    produce: Callable[[str, int, int], torch.Tensor],
    on_rows: Callable[[str, int], None] | None = None,
    max_piece_bytes: int | None = None,
) -> None:
    """Write the distributed checkpoint of ``index``'s model into the empty folder ``out_dir``.

    ``produce(param, start, stop)`` returns rows ``[start, stop)`` of a parameter
    (``[stop - start, *shape[1:]]``, the skeleton's dtype). Each chunk is written in pieces of
    at most ``max_piece_bytes`` rows (None: whole chunks); one piece is alive at a time.
    ``on_rows(param, rows)`` is called after each piece (progress).
    """
    from nemo_neko.compat import megatron as mc

    def resolve(key: str, offset: tuple[int, ...], axis, start, stop) -> torch.Tensor:
        chunk = index.chunks.get((key, offset))
        if chunk is None:
            raise KeyError(f"the checkpoint asks for {key} at {offset}, unknown to the skeleton")
        if axis is None:  # the whole chunk
            start, stop = 0, chunk.stop - chunk.start
        elif axis != len(chunk.block) - len(index.shapes[chunk.param]):
            raise NotImplementedError(f"{key}: pieces along an axis other than the rows")
        data = produce(chunk.param, chunk.start + start, chunk.start + stop)
        if on_rows is not None:
            on_rows(chunk.param, stop - start)
        return data

    # the save applies factories and reshapes tensors in place: hand it a copy (meta, free)
    sharded = {"model": copy.deepcopy(index.sharded)}
    mc.save_streaming(sharded, str(out_dir), resolve, max_item_bytes=max_piece_bytes)


def read_rows(
    index: ChunkIndex,
    checkpoint_dir: str | Path,
    requests: list[tuple[str, int, int, torch.Tensor]],
) -> None:
    """Read rows of parameters from a checkpoint straight into tensors, in one load.

    Args:
        index: the skeleton's index (parameters as the TP=1 model holds them).
        checkpoint_dir: a distributed checkpoint of that model (any layout).
        requests: ``(param, start, stop, out)``: rows ``[start, stop)`` of ``param`` go into
            ``out`` (contiguous, ``[stop - start, *shape[1:]]``, the checkpoint's dtype).

    Only the stored pieces that overlap the rows are read (each once, as a whole).
    """
    from nemo_neko.compat import megatron as mc

    blocks = {}
    for n, (param, start, stop, out) in enumerate(requests):
        shape = index.shapes[param]
        if tuple(out.shape) != (stop - start, *shape[1:]) or not out.is_contiguous():
            raise ValueError(f"{param}: rows {start}:{stop} need a contiguous {shape[1:]} target")
        for c, chunk in enumerate(index.by_param[param]):
            lo, hi = max(start, chunk.start), min(stop, chunk.stop)
            if lo >= hi:
                continue
            axis = len(chunk.block) - len(shape)  # the rows axis of the stored tensor
            offset = list(chunk.offset)
            offset[axis] += lo - chunk.start
            block = list(chunk.block)
            block[axis] = hi - lo
            target = out[lo - start : hi - start].view(block)
            blocks[f"{n}.{c}"] = (chunk.key, chunk.global_shape, tuple(offset), target)
    if blocks:
        mc.load_blocks(blocks, str(checkpoint_dir))


def read_param(index: ChunkIndex, checkpoint_dir: str | Path, param: str) -> torch.Tensor:
    """One whole parameter (``index.shapes[param]``) from a checkpoint."""
    out = torch.empty(index.shapes[param], dtype=index.dtype)
    read_rows(index, checkpoint_dir, [(param, 0, out.shape[0], out)])
    return out
