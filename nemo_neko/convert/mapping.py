"""Parameter recipes: each Megatron parameter as a stack of row blocks of Hugging Face tensors.

Every conversion here is a row permutation, so a Megatron parameter (dim 0 = output rows) is
described by its *pieces* in order, each a block of rows of one Hugging Face tensor
(:class:`Rows`) or generated rows (:class:`Fill`: vocabulary padding, a new router)::

    linear_qkv  = [q rows of group 0, k_0, v_0, q rows of group 1, k_1, v_1, ...]
    linear_fc1  = [gate_proj, up_proj]               (gated MLPs: SwiGLU, GeGLU)
    embedding   = [embed_tokens, zeros to the padded vocabulary]

The same recipe serves both directions: import assembles any rows of a parameter from the pieces
it overlaps (reading only those rows of the source tensors); export inverts it into, for each
Hugging Face tensor, the parameter rows it comes from (:func:`export_sources`). ``scale`` and
``shift`` (``hf = megatron * scale + shift``) cover a value change that a format needs, e.g.
Gemma's ``(1 + w)`` norm gain written for an architecture whose norm multiplies by ``w``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rows:
    """Rows ``[start, stop)`` of Hugging Face tensor ``name`` (sizes are always explicit: they
    come from the model config, and a checkpoint that disagrees is caught before writing)."""

    name: str
    start: int
    stop: int
    scale: float = 1.0
    shift: float = 0.0
    """``hf = megatron * scale + shift`` (identity by default)."""


@dataclass(frozen=True)
class Fill:
    """``rows`` generated rows: zeros (``std=0``), or normal(0, ``std``) drawn from ``seed``."""

    rows: int
    std: float = 0.0
    seed: int = 0


Piece = Rows | Fill


@dataclass
class Recipe:
    """A Megatron parameter: its pieces in row order, plus optional noise on copied rows."""

    pieces: list[Piece]
    noise_std: float = 0.0
    """Add normal(0, ``noise_std``) to rows copied from Hugging Face tensors (upcycling)."""
    noise_seed: int = 0


def qkv_pieces(q: str, k: str, v: str, heads: int, groups: int, head_dim: int) -> list[Piece]:
    """Megatron's fused QKV rows, interleaved per query group: ``[q_g, k_g, v_g]`` for each of
    the ``groups`` key/value heads (``heads / groups`` query heads each, ``head_dim`` rows per
    head). Works for weights ``[rows, hidden]`` and biases ``[rows]`` alike."""
    per_group = heads // groups * head_dim
    pieces: list[Piece] = []
    for g in range(groups):
        pieces += [
            Rows(q, g * per_group, (g + 1) * per_group),
            Rows(k, g * head_dim, (g + 1) * head_dim),
            Rows(v, g * head_dim, (g + 1) * head_dim),
        ]
    return pieces


def padded(name: str, rows: int, padded_rows: int, **kwargs) -> list[Piece]:
    """All ``rows`` rows of ``name``, then zero rows up to ``padded_rows`` (vocabulary padding)."""
    pad = [Fill(padded_rows - rows)] if padded_rows > rows else []
    return [Rows(name, 0, rows, **kwargs), *pad]


def whole(name: str, rows: int) -> Rows:
    """All ``rows`` rows of tensor ``name``."""
    return Rows(name, 0, rows)


def _piece_rows(piece: Piece) -> int:
    return piece.rows if isinstance(piece, Fill) else piece.stop - piece.start


def recipe_rows(recipe: Recipe) -> int:
    """Rows the recipe assembles."""
    return sum(_piece_rows(p) for p in recipe.pieces)


def source_rows(pairs: Iterable[tuple[str, Recipe]]) -> dict[str, int]:
    """Rows of every Hugging Face tensor the recipes read (the highest row they read)."""
    rows: dict[str, int] = {}
    for _, recipe in pairs:
        for piece in recipe.pieces:
            if isinstance(piece, Rows):
                rows[piece.name] = max(rows.get(piece.name, 0), piece.stop)
    return rows


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


NOISE_BLOCK = 256
"""Normal rows are drawn in blocks of this many rows, each from its own seed: any row window is
reproducible without drawing the rows before it."""


def _normal(lo: int, hi: int, trailing: tuple[int, ...], std: float, seed: int) -> torch.Tensor:
    """Rows ``[lo, hi)`` of a normal(0, ``std``) matrix ``[*, *trailing]`` fixed by ``seed``."""
    blocks = []
    for block in range(lo // NOISE_BLOCK, (hi - 1) // NOISE_BLOCK + 1):
        generator = torch.Generator().manual_seed(_seed(seed, block))
        values = torch.randn((NOISE_BLOCK, *trailing), generator=generator)
        first = block * NOISE_BLOCK
        blocks.append(values[max(lo, first) - first : min(hi, first + NOISE_BLOCK) - first])
    return torch.cat(blocks) * std


def assemble(
    param: str,
    recipe: Recipe,
    start: int,
    stop: int,
    trailing: tuple[int, ...],
    dtype: torch.dtype,
    read: Callable[..., torch.Tensor],
    source_dtype: Callable[[str], torch.dtype],
) -> torch.Tensor:
    """Rows ``[start, stop)`` of a Megatron parameter, ``[stop - start, *trailing]`` in ``dtype``.

    Only the source rows the range overlaps are read (``read(name, start, stop, out=None)``),
    straight into the result when the dtypes agree. Generated rows and noise come from seeds
    fixed by the parameter's name and the row, so any chunking gives the same values.
    """
    out = torch.empty((stop - start, *trailing), dtype=dtype)
    at = 0
    for i, piece in enumerate(recipe.pieces):
        rows = _piece_rows(piece)
        lo, hi = max(start, at), min(stop, at + rows)
        if lo < hi:
            target = out[lo - start : hi - start]
            if isinstance(piece, Fill):
                if piece.std:
                    seed = _seed(param, i, piece.seed)
                    target.copy_(_normal(lo - at, hi - at, trailing, piece.std, seed))
                else:
                    target.zero_()
            else:
                first = piece.start + lo - at
                if source_dtype(piece.name) == dtype and _identity(piece):
                    read(piece.name, first, first + hi - lo, out=target)
                else:
                    values = read(piece.name, first, first + hi - lo)
                    target.copy_(
                        _to_megatron(values.float(), piece) if not _identity(piece) else values
                    )
                if recipe.noise_std:
                    seed = _seed(param, i, recipe.noise_seed)
                    target.add_(_normal(lo - at, hi - at, trailing, recipe.noise_std, seed))
        at += rows
    if at < stop:
        raise ValueError(f"{param}: the recipe gives {at} rows, {stop} were asked for")
    return out


def _identity(piece: Rows) -> bool:
    return piece.scale == 1.0 and piece.shift == 0.0


def _to_megatron(values: torch.Tensor, piece: Rows) -> torch.Tensor:
    return (values - piece.shift) / piece.scale


@dataclass(frozen=True)
class Source:
    """Rows ``[hf_start, hf_stop)`` of a Hugging Face tensor come from rows
    ``[start, stop)`` of Megatron parameter ``param``, as ``param * scale + shift``."""

    param: str
    start: int
    stop: int
    hf_start: int
    hf_stop: int
    scale: float = 1.0
    shift: float = 0.0


def export_sources(pairs: Iterable[tuple[str, Recipe]]) -> dict[str, list[Source]]:
    """Invert import recipes: each Hugging Face tensor -> where its rows live in Megatron
    (in the recipes' order). Generated pieces (padding, new routers) are left out. Raises
    ``ValueError`` when a tensor's rows are not covered exactly once."""
    pairs = list(pairs)
    hf_rows = source_rows(pairs)
    sources: dict[str, list[Source]] = {}
    for param, recipe in pairs:
        at = 0
        for piece in recipe.pieces:
            rows = _piece_rows(piece)
            if isinstance(piece, Rows):
                sources.setdefault(piece.name, []).append(
                    Source(
                        param,
                        at,
                        at + rows,
                        piece.start,
                        piece.start + rows,
                        piece.scale,
                        piece.shift,
                    )
                )
            at += rows
    for name, parts in sources.items():
        parts.sort(key=lambda s: s.hf_start)
        covered = 0
        for s in parts:
            if s.hf_start != covered:
                raise ValueError(f"{name}: rows {covered}..{s.hf_start} come from no parameter")
            covered = s.hf_stop
        if covered != hf_rows[name]:
            raise ValueError(f"{name}: {hf_rows[name]} rows, parameters give {covered}")
    return sources
