"""Sparse upcycling: the dense MLP copied into every expert gives the dense model's logits; an
upcycled Gemma exports as an equivalent Mixtral; the upcycled model fine-tunes with NeKo's
task-guided router through ``train.init_from`` and exports back to Hugging Face."""

import json

import pytest
import torch

from nemo_neko.parallel import ParallelLayout
from nemo_neko.testing.distributed import run_distributed
from tests.convert.hf_models import VOCAB, hf_logits, read_safetensors_dir, save_hf_model, tokens
from tests.convert.workers import check_logits, convert, read_params, save_logits


def _upcycle(source, out, **settings):
    run_distributed(convert, 1, "upcycle", str(source), str(out), {"upcycle": settings})


@pytest.mark.parametrize("kind,router", [("gemma", "normal"), ("mistral", "zeros")])
def test_upcycled_model_gives_the_dense_logits(kind, router, hf_model, tmp_path):
    source, out = hf_model(kind), tmp_path / "moe"
    _upcycle(source, out, num_experts=4, topk=2, router_init=router, router_std=0.5)
    ids = tokens()
    run_distributed(check_logits, 1, str(out), ParallelLayout(), ids, hf_logits(source, ids), 1e-4)

    dense = read_safetensors_dir(source)
    names = [f"decoder.layers.1.mlp.experts.local_experts.{j}.linear_fc1.weight" for j in range(4)]
    names += ["decoder.layers.1.mlp.router.weight"]
    params = read_params(out, names, tmp_path / "params.pt")
    fc1 = torch.cat([dense[f"model.layers.1.mlp.{p}_proj.weight"] for p in ("gate", "up")])
    for name in names[:4]:
        assert torch.equal(params[name], fc1), name
    router_weight = params[names[4]]
    assert router_weight.shape == (4, 32)
    if router == "zeros":
        assert not router_weight.any()
    else:
        assert 0.3 < float(router_weight.std()) < 0.7
    meta = json.loads((out / "conversion.json").read_text())
    assert meta["upcycle"]["num_experts"] == 4


def test_upcycled_gemma_exports_as_an_equivalent_mixtral(hf_model, tmp_path):
    source, moe, exported = hf_model("gemma"), tmp_path / "moe", tmp_path / "hf"
    _upcycle(source, moe, num_experts=4, topk=2, router_std=0.5, noise=0.05)
    run_distributed(convert, 1, "export", str(moe), str(exported), {})
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "mixtral" and config["hidden_act"] == "gelu_pytorch_tanh"
    assert config["head_dim"] == 16 and config["tie_word_embeddings"] is False
    # special tokens: the tokenizer's (<pad> 0, <s> 1, </s> 2), not Mixtral's defaults
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (0, 1, 2)
    ids = tokens()
    run_distributed(save_logits, 1, str(moe), ParallelLayout(), ids, str(tmp_path / "logits.pt"))
    megatron = torch.load(tmp_path / "logits.pt")[..., :VOCAB]
    transformers = hf_logits(exported, ids)
    assert (megatron - transformers).abs().max() <= 1e-4
    dense = hf_logits(source, ids)
    assert (transformers - dense).abs().max() > 1e-3, "the expert noise must change the model"


EMBEDDING = "embedding.word_embeddings.weight"
MICRO_DENSE = dict(  # a dense Mistral shaped like nemo_neko.testing.runs' micro model
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    vocab_size=512,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
    max_position_embeddings=4096,
)


@pytest.mark.slow
def test_upcycled_router_trains_from_init_from_and_the_run_exports_back(tmp_path):
    from nemo_neko.testing.runs import write_micro_run
    from tests.convert.workers import train_run

    dense = save_hf_model("mistral", tmp_path / "dense", **MICRO_DENSE)
    moe = tmp_path / "moe"
    _upcycle(dense, moe, num_experts=8, topk=2, router_std=0.02)
    run_dir = tmp_path / "run"
    overrides = [
        f"train.init_from={moe}",
        "model.vocab_size=512",
        "data.seq_length=128",
        "train.global_batch_tokens=512",
        "train.max_steps=8",
        "train.lr=3e-3",
        "train.warmup_fraction=0.0",
    ]
    config = write_micro_run(run_dir, overrides, data_root=tmp_path / "data")
    run_distributed(train_run, 1, str(config))

    losses = [
        json.loads(line)["loss"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "train"
    ]
    assert losses[-1] < losses[0], losses
    names = ["decoder.layers.0.mlp.router.weight"] + [
        f"decoder.layers.0.mlp.experts.local_experts.{j}.linear_fc2.weight" for j in range(8)
    ]
    before = read_params(moe, names + [EMBEDDING], tmp_path / "before.pt")
    after = read_params(run_dir, names + [EMBEDDING], tmp_path / "after.pt")
    moved = (after[EMBEDDING] - before[EMBEDDING]).abs().max()
    assert (
        moved < 0.25 * before[EMBEDDING].abs().max()
    ), "training must start from the upcycled model"
    router_step = (after[names[0]] - before[names[0]]).abs().max()
    assert router_step > 1e-3, "the router must train"
    assert all(torch.equal(before[names[1]], before[n]) for n in names[2:])
    assert not all(torch.equal(after[names[1]], after[n]) for n in names[2:]), "experts diverge"

    exported = tmp_path / "hf"
    run_distributed(convert, 1, "export", str(run_dir), str(exported), {})
    assert json.loads((exported / "config.json").read_text())["model_type"] == "mixtral"
    assert (exported / "tokenizer.json").exists()
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(3))
    run_distributed(save_logits, 1, str(run_dir), ParallelLayout(), ids, str(tmp_path / "l.pt"))
    megatron = torch.load(tmp_path / "l.pt")[..., :512]
    assert (megatron - hf_logits(exported, ids)).abs().max() <= 1e-4
