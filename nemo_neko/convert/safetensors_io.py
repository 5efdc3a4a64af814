"""Hugging Face safetensors checkpoints read and written tensor by tensor, rows at a time.

The format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, byte
offsets; optional ``__metadata__``) and the raw tensor bytes. Reading here uses plain ``seek`` +
``readinto`` into the destination tensor, not a memory map: what a conversion holds is exactly
the tensors it asked for (a memory-mapped file would count every page read towards the process's
resident memory until it is closed). Any rows ``[start, stop)`` of a tensor can be read alone.

Writing streams too: a shard's header is computed from the planned names, dtypes and shapes, then
each tensor is produced, written and dropped.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A Hugging Face checkpoint folder that cannot be read as it is."""


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lies in a safetensors file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    """Byte offset of the data from the start of the file."""

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize if self.shape else 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _read_into(fh, buffer: memoryview) -> None:
    """Fill ``buffer`` from ``fh`` (a raw read returns at most ~2 GB at a time)."""
    done = 0
    while done < len(buffer):
        n = fh.readinto(buffer[done:])
        if not n:
            raise CheckpointError(f"{fh.name}: file ends inside a tensor")
        done += n


def _byte_view(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy()).cast("B")


class SafetensorsFile:
    """One ``.safetensors`` file: its header at open, tensor rows on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = open(self.path, "rb", buffering=0)
        size = os.fstat(self._fh.fileno()).st_size
        raw = self._fh.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{self.path}: not a safetensors file (shorter than 8 bytes)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise CheckpointError(f"{self.path}: not a safetensors file (header length)")
        try:
            header = json.loads(self._fh.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{self.path}: malformed safetensors header ({err})") from None
        self.metadata = header.pop("__metadata__", None) or {}
        data_start = 8 + header_len
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            if entry["dtype"] not in DTYPES:
                raise CheckpointError(f"{self.path}: {name} has unsupported dtype {entry['dtype']}")
            begin, end = entry["data_offsets"]
            info = TensorInfo(DTYPES[entry["dtype"]], tuple(entry["shape"]), data_start + begin)
            if end - begin != info.nbytes or data_start + end > size:
                raise CheckpointError(f"{self.path}: {name} has inconsistent offsets (truncated?)")
            self.tensors[name] = info

    def read(
        self, name: str, start: int = 0, stop: int | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rows ``[start, stop)`` of tensor ``name`` (``[stop - start, *shape[1:]]``).

        ``out`` (contiguous, the tensor's dtype and the rows' shape) receives the data when given.
        """
        info = self.tensors[name]
        if not info.shape:  # a scalar
            start, stop = 0, 1
        stop = info.shape[0] if stop is None and info.shape else stop
        shape = (stop - start, *info.shape[1:]) if info.shape else ()
        if out is None:
            out = torch.empty(shape, dtype=info.dtype)
        elif out.dtype != info.dtype or tuple(out.shape) != shape or not out.is_contiguous():
            raise ValueError(f"{name}: destination must be contiguous {shape} {info.dtype}")
        row_bytes = info.row_bytes if info.shape else info.dtype.itemsize
        self._fh.seek(info.begin + start * row_bytes)
        if out.numel():
            _read_into(self._fh, _byte_view(out))
        return out

    def close(self) -> None:
        self._fh.close()


class HFCheckpoint:
    """A Hugging Face model folder: ``config.json`` and safetensors weights (one file or shards
    listed in ``model.safetensors.index.json``). Every shard's header is read at open, so a
    missing or truncated shard, or a tensor the index lists but no shard holds, fails here."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        config_file = self.path / "config.json"
        if not config_file.exists():
            raise CheckpointError(f"{self.path}: no config.json (not a Hugging Face model folder)")
        self.config = json.loads(config_file.read_text())
        index_file = self.path / INDEX_FILE
        if index_file.exists():
            weight_map = json.loads(index_file.read_text())["weight_map"]
        elif (self.path / SINGLE_FILE).exists():
            weight_map = None
        else:
            raise CheckpointError(
                f"{self.path}: no {SINGLE_FILE} and no {INDEX_FILE} (only safetensors weights are "
                f"read; convert pytorch_model*.bin first)"
            )
        files = sorted(set(weight_map.values())) if weight_map else [SINGLE_FILE]
        missing = [f for f in files if not (self.path / f).exists()]
        if missing:
            raise CheckpointError(
                f"{self.path}: missing shard(s) {missing} listed in {INDEX_FILE} "
                f"({len(files) - len(missing)} of {len(files)} present); download them again"
            )
        self.files = {f: SafetensorsFile(self.path / f) for f in files}
        self.where: dict[str, str] = {}
        for file, handle in self.files.items():
            for name in handle.tensors:
                self.where[name] = file
        if weight_map:
            absent = [n for n, f in weight_map.items() if self.where.get(n) != f]
            if absent:
                raise CheckpointError(
                    f"{self.path}: {len(absent)} tensor(s) listed in {INDEX_FILE} are not in "
                    f"their shard, e.g. {absent[:3]}"
                )

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def names(self) -> list[str]:
        return list(self.where)

    def info(self, name: str) -> TensorInfo:
        return self.files[self.where[name]].tensors[name]

    def read(self, name: str, start: int = 0, stop=None, out=None) -> torch.Tensor:
        """Rows of tensor ``name``: see :meth:`SafetensorsFile.read`."""
        return self.files[self.where[name]].read(name, start, stop, out)

    def dtype(self) -> torch.dtype:
        """The most common floating-point dtype of the weights."""
        counts: dict[torch.dtype, int] = {}
        for name in self.where:
            info = self.info(name)
            if info.dtype.is_floating_point:
                counts[info.dtype] = counts.get(info.dtype, 0) + info.nbytes
        return max(counts, key=counts.get) if counts else torch.float32

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor to write: its name, dtype and shape."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def write_safetensors(
    path: str | os.PathLike,
    tensors: list[PlannedTensor],
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write one safetensors file, producing (and dropping) one tensor at a time."""
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # data aligned to 8 bytes
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(encoded)))
        fh.write(encoded)
        for t in tensors:
            data = produce(t.name)
            if data.dtype != t.dtype or tuple(data.shape) != t.shape:
                raise ValueError(
                    f"{t.name}: produced {tuple(data.shape)} {data.dtype}, planned "
                    f"{t.shape} {t.dtype}"
                )
            if data.numel():
                fh.write(_byte_view(data.contiguous()))
            del data
    os.replace(tmp, path)


def plan_shards(
    tensors: Iterable[PlannedTensor], max_shard_bytes: int
) -> list[list[PlannedTensor]]:
    """Split ``tensors`` in order into shards of at most ``max_shard_bytes`` (a larger tensor
    gets a shard of its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return [s for s in shards if s]


def write_hf_weights(
    out_dir: str | os.PathLike,
    tensors: list[PlannedTensor],
    produce: Callable[[str], torch.Tensor],
    max_shard_bytes: int = 5 * 2**30,
    on_tensor: Callable[[PlannedTensor], None] | None = None,
) -> list[str]:
    """Write ``tensors`` as ``model.safetensors`` or ``model-0000i-of-0000N.safetensors`` shards
    plus ``model.safetensors.index.json``; returns the file names."""
    out_dir = Path(out_dir)
    shards = plan_shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]

    def produce_and_report(name: str) -> torch.Tensor:
        data = produce(name)
        if on_tensor is not None:
            on_tensor(by_name[name])
        return data

    by_name = {t.name: t for t in tensors}
    for name, shard in zip(names, shards):
        write_safetensors(out_dir / name, shard, produce_and_report)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in tensors)},
            "weight_map": {t.name: name for name, shard in zip(names, shards) for t in shard},
        }
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return names
