"""Hugging Face -> Megatron -> Hugging Face for Mixtral, Qwen2-MoE and Gemma: the imported model
gives transformers' logits (TP=1/EP=1 and a split layout on gloo), and the export reproduces
every tensor bit for bit."""

import json

import pytest
import torch

from nemo_neko.parallel import ParallelLayout
from nemo_neko.testing.distributed import run_distributed
from tests.convert.hf_models import hf_logits, read_safetensors_dir, tokens
from tests.convert.workers import check_logits, convert, import_without_extra_states

ARCHITECTURES = ["mixtral", "qwen2_moe", "gemma"]
SPLIT_LAYOUTS = {  # layout, config overrides
    "mixtral": (ParallelLayout(expert=2), {}),
    "qwen2_moe": (ParallelLayout(expert=2), {}),
    # dense: TP without sequence parallelism; Gemma-2B's single KV head cannot split over TP
    "gemma": (ParallelLayout(tensor=2), {"num_key_value_heads": 2}),
}


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_imported_model_gives_the_hf_logits(kind, hf_model, imported):
    ids = tokens()
    reference = hf_logits(hf_model(kind), ids)
    run_distributed(check_logits, 1, str(imported(kind)), ParallelLayout(), ids, reference, 1e-4)
    meta = json.loads((imported(kind) / "conversion.json").read_text())
    assert meta["model_type"] == kind and meta["padded_vocab_size"] == 128
    assert (imported(kind) / "tokenizer" / "tokenizer.json").exists()
    assert (imported(kind) / "tokenizer" / "special_tokens_map.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_imported_model_gives_the_hf_logits_at_a_split_layout(kind, hf_model, tmp_path):
    layout, config = SPLIT_LAYOUTS[kind]
    source, out = hf_model(kind, **config), tmp_path / "ckpt"
    run_distributed(convert, 1, "import", str(source), str(out), {"layout": layout})
    ids = tokens()
    reference = hf_logits(source, ids)
    run_distributed(check_logits, 2, str(out), layout, ids, reference, 1e-4)


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_round_trip_reproduces_every_tensor_bit_for_bit(kind, hf_model, imported, tmp_path):
    source, out = hf_model(kind), tmp_path / "hf"
    run_distributed(
        convert, 1, "export", str(imported(kind)), str(out), {"max_shard_bytes": 40_000}
    )
    before, after = read_safetensors_dir(source), read_safetensors_dir(out)
    assert sorted(before) == sorted(after)
    for name, tensor in before.items():
        again = after[name]
        assert again.dtype == tensor.dtype and again.shape == tensor.shape, name
        assert torch.equal(again.view(torch.uint8), tensor.view(torch.uint8)), name
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(before)
    assert len(set(index["weight_map"].values())) > 1
    config, original = (json.loads((p / "config.json").read_text()) for p in (out, source))
    for key in (
        "model_type",
        "architectures",
        "hidden_size",
        "num_hidden_layers",
        "vocab_size",
        "num_key_value_heads",
        "intermediate_size",
        "tie_word_embeddings",
    ):
        assert config[key] == original[key], key
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).read_bytes() == (source / name).read_bytes()
    ids = tokens()
    assert torch.equal(hf_logits(out, ids), hf_logits(source, ids))  # transformers reads it


def test_tensors_written_in_small_pieces_load_and_export_alike(hf_model, tmp_path):
    source, pieces, out = hf_model("mixtral"), tmp_path / "pieces", tmp_path / "hf"
    run_distributed(convert, 1, "import", str(source), str(pieces), {"max_piece_bytes": 1000})
    files = len(list(pieces.glob("*.distcp")))
    assert files > 2 * len(read_safetensors_dir(source))  # every large tensor was split
    ids = tokens()
    run_distributed(
        check_logits, 1, str(pieces), ParallelLayout(), ids, hf_logits(source, ids), 1e-4
    )
    run_distributed(convert, 1, "export", str(pieces), str(out), {})
    before, after = read_safetensors_dir(source), read_safetensors_dir(out)
    assert all(
        torch.equal(after[n].view(torch.uint8), t.view(torch.uint8)) for n, t in before.items()
    )


def test_a_model_only_load_goes_without_absent_extra_states(hf_model, tmp_path):
    source, out = hf_model("qwen2_moe"), tmp_path / "ckpt"
    run_distributed(import_without_extra_states, 1, str(source), str(out))
    ids = tokens()
    run_distributed(check_logits, 1, str(out), ParallelLayout(), ids, hf_logits(source, ids), 1e-4)
