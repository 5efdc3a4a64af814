"""GGUF import: a tiny Llama GGUF written here (F32, F16, BF16, Q8_0, Q4_0, Q4_1 tensors, a BPE
tokenizer with a chat template) imports to a Megatron checkpoint that gives transformers' logits
for the same file, with the tokenizer folder beside it; upcycling from GGUF keeps the logits."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_neko.parallel import ParallelLayout
from nemo_neko.testing.distributed import run_distributed
from tests.convert.gguf_models import TYPES, gguf_logits, write_tiny_gguf
from tests.convert.workers import check_logits, convert

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


def ids(vocab: int = 320) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("tied", [False, True])
def test_imported_gguf_gives_the_transformers_logits(tied, tmp_path):
    source = write_tiny_gguf(tmp_path / "model.gguf", tied=tied)
    out = tmp_path / "ckpt"
    run_distributed(convert, 1, "import", str(source), str(out), {})
    reference = gguf_logits(source, ids())
    run_distributed(check_logits, 1, str(out), ParallelLayout(), ids(), reference, 1e-4)
    config = json.loads((out / "hf_config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is tied
    assert set(TYPES.values()) >= {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"}


def test_gguf_tokenizer_and_chat_template_come_along(gguf_file, tmp_path):
    from transformers import AutoTokenizer

    from nemo_neko.data.tokenizer import TextTokenizer

    out = tmp_path / "ckpt"
    done = subprocess.run(
        [sys.executable, "-m", "nemo_neko.convert", "import", "--gguf", str(gguf_file)]
        + ["--out", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "train from it" in done.stdout
    ours = TextTokenizer.from_dir(out / "tokenizer")
    theirs = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    text = "list all flights from city 3 to city 8"
    assert ours.encode(text) == theirs(text, add_special_tokens=False).input_ids
    assert ours.special["eos"] == "<|im_end|>" and ours.chat_template is not None


@pytest.mark.parametrize("layers", [None, [1]])
def test_upcycled_gguf_computes_what_the_dense_model_does(layers, gguf_file, tmp_path):
    from nemo_neko.convert.importer import load_model_config

    out = tmp_path / "moe"
    upcycle = {"num_experts": 4, "topk": 2, "router_init": "normal", "router_std": 0.02}
    upcycle["layers"] = layers  # [1]: a mixed stack, layer 0 stays dense
    run_distributed(convert, 1, "upcycle", str(gguf_file), str(out), {"upcycle": upcycle})
    model = load_model_config(out / "neko_model.yaml")
    assert model.moe_layers == layers and [model.is_moe_layer(i) for i in (0, 1)] == (
        [True, True] if layers is None else [False, True]
    )
    reference = gguf_logits(gguf_file, ids())
    run_distributed(check_logits, 1, str(out), ParallelLayout(), ids(), reference, 1e-4)


def test_a_damaged_or_foreign_gguf_is_one_line(gguf_file, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(gguf_file.read_bytes()[:1000])
    text = tmp_path / "weights.bin"
    text.write_bytes(b"not a model")
    for source, message in [
        (broken, "not a readable GGUF file"),
        (tmp_path / "absent.gguf", "no such GGUF file"),
        (text, "a file that is not .gguf"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "nemo_neko.convert", "import", "--gguf", str(source)]
            + ["--out", str(tmp_path / "out"), "--quiet"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 1 and message in done.stderr, done.stderr[-1500:]
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "out").exists()
