"""The streaming safetensors reader/writer against the safetensors library, and the parameter
recipes (QKV interleaving, row windows, generated rows, the export inverse)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from nemo_neko.convert.mapping import (
    Fill,
    Recipe,
    Rows,
    assemble,
    export_sources,
    padded,
    qkv_pieces,
    whole,
)
from nemo_neko.convert.safetensors_io import (
    CheckpointError,
    HFCheckpoint,
    PlannedTensor,
    SafetensorsFile,
    plan_shards,
    write_hf_weights,
)


def _tensors():
    gen = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(7, 5, generator=gen),
        "b": torch.randn(3, 4, generator=gen).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
    }


def test_reader_reads_rows_of_library_files(tmp_path):
    tensors = _tensors()
    save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt"})
    f = SafetensorsFile(tmp_path / "x.safetensors")
    assert f.metadata == {"format": "pt"}
    for name, t in tensors.items():
        assert torch.equal(f.read(name), t) and f.read(name).dtype == t.dtype
    assert torch.equal(f.read("a", 2, 5), tensors["a"][2:5])
    out = torch.empty(2, 4, dtype=torch.bfloat16)
    assert f.read("b", 1, 3, out=out) is out and torch.equal(out, tensors["b"][1:3])
    with pytest.raises(ValueError, match="destination"):
        f.read("a", 0, 2, out=torch.empty(2, 5, dtype=torch.float64))
    f.close()


def test_writer_output_is_read_by_the_library(tmp_path):
    tensors = _tensors()
    plan = [PlannedTensor(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    names = write_hf_weights(tmp_path, plan, lambda n: tensors[n], max_shard_bytes=100)
    assert len(names) > 1 and names[0] == f"model-00001-of-{len(names):05d}.safetensors"
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(tensors)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in plan)
    loaded = {}
    for name in names:
        loaded.update(load_file(tmp_path / name))
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t), name
    one = tmp_path / "one"
    one.mkdir()
    assert write_hf_weights(one, plan, lambda n: tensors[n]) == ["model.safetensors"]
    with pytest.raises(ValueError, match="planned"):
        write_hf_weights(one, plan[:1], lambda n: tensors["c"])


def test_plan_shards_keeps_order_and_gives_big_tensors_their_own_shard():
    plan = [PlannedTensor(str(i), torch.float32, (n,)) for i, n in enumerate([10, 10, 50, 5])]
    shards = plan_shards(plan, max_shard_bytes=100)
    assert [[t.name for t in s] for s in shards] == [["0", "1"], ["2"], ["3"]]


def test_checkpoint_folder_errors(tmp_path):
    tensors = _tensors()
    save_file({"a": tensors["a"]}, tmp_path / "s1.safetensors")
    (tmp_path / "config.json").write_text("{}")
    index = {"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not in their shard"):
        HFCheckpoint(tmp_path)
    index["weight_map"]["b"] = "s2.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"missing shard\(s\) \['s2.safetensors'\]"):
        HFCheckpoint(tmp_path)
    data = (tmp_path / "s1.safetensors").read_bytes()
    (tmp_path / "s2.safetensors").write_bytes(data[:-8])  # truncated
    with pytest.raises(CheckpointError, match="truncated"):
        HFCheckpoint(tmp_path)


def test_qkv_rows_are_interleaved_per_query_group():
    # 4 query heads in 2 groups, head_dim 1: Megatron wants [q0 q1 k0 v0 q2 q3 k1 v1]
    pieces = qkv_pieces("q", "k", "v", heads=4, groups=2, head_dim=1)
    assert [(p.name, p.start, p.stop) for p in pieces] == [
        ("q", 0, 2), ("k", 0, 1), ("v", 0, 1), ("q", 2, 4), ("k", 1, 2), ("v", 1, 2),
    ]  # fmt: skip


def _source():
    gen = torch.Generator().manual_seed(1)
    return {"x": torch.randn(6, 3, generator=gen), "y": torch.randn(4, 3, generator=gen)}


def _assemble(recipe, start, stop, source, param="p"):
    def read(name, first, last, out=None):
        rows = source[name][first:last]
        return rows if out is None else out.copy_(rows)

    return assemble(
        param, recipe, start, stop, (3,), torch.float32, read, lambda name: torch.float32
    )


def test_any_row_window_of_a_recipe_equals_the_same_rows_of_the_whole():
    source = _source()
    recipe = Recipe([Rows("y", 1, 4), whole("x", 6), Fill(2), Fill(3, std=0.5, seed=7)], 0.1, 3)
    full = _assemble(recipe, 0, 14, source)
    assert 0.05 < float((full[3:9] - source["x"]).std()) < 0.2  # noise on copied rows
    assert torch.equal(full[9:11], torch.zeros(2, 3)) and 0.2 < float(full[11:].std()) < 1.0
    for start, stop in [(0, 3), (2, 10), (8, 14), (12, 13)]:
        assert torch.equal(_assemble(recipe, start, stop, source), full[start:stop])
    assert not torch.equal(_assemble(recipe, 0, 14, source, param="q"), full)  # seeds per param


def test_export_sources_invert_the_recipes():
    source = _source()
    pairs = [
        ("swapped", Recipe([Rows("x", 3, 6), Rows("x", 0, 3)])),
        ("padded", Recipe(padded("y", 4, 6, scale=2.0))),  # stored as y / 2
    ]
    params = {name: _assemble(recipe, 0, 6, source) for name, recipe in pairs}
    assert torch.equal(params["padded"][:4] * 2, source["y"])
    sources = export_sources(pairs)
    assert list(sources) == ["x", "y"]

    for name, rows in (("x", 6), ("y", 4)):
        out = torch.empty(rows, 3)
        for s in sources[name]:
            out[s.hf_start : s.hf_stop] = params[s.param][s.start : s.stop] * s.scale + s.shift
        assert torch.equal(out, source[name]), name
    with pytest.raises(ValueError, match="rows 0..2 come from no parameter"):
        export_sources([("p", Recipe([Rows("x", 2, 6)]))])
