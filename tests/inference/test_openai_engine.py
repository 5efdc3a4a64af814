"""``correct --engine openai`` against a real OpenAI-compatible server on this machine: a micro run
in the chat format (its own chat template and system turn) is trained, corrected by the local
KV-cache engine, exported to Hugging Face (``python -m nemo_neko.convert export``) and served by
``transformers serve`` (``pip install -e .[serving]``); the server's predictions must be the
local engine's, line for line. Without the server's packages the server tests skip, unless
``NEKO_REQUIRE_SERVING=1`` (CI), where they fail."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_neko.data.records import read_records
from nemo_neko.data.tokenizer import TextTokenizer, train_bpe_tokenizer
from nemo_neko.parallel import free_port
from nemo_neko.paths import records_beside
from nemo_neko.testing.distributed import run_distributed
from nemo_neko.testing.runs import train_run, write_micro_run

ROOT = Path(__file__).resolve().parents[2]
SERVING = ("fastapi", "uvicorn", "openai")
TEMPLATE = (  # SmolLM2-Instruct's template
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def python_m(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def correct(run_dir, *extra, timeout=600):
    return python_m("nemo_neko.eval", "correct", "--run-dir", run_dir, *extra, timeout=timeout)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def chat_tokenizer(folder: Path, records) -> Path:
    """A BPE tokenizer of the records' words with SmolLM2's special tokens and chat template."""
    texts = [t for r in records for t in [r.reference, *r.hypotheses]] * 4
    special = {"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": "<unk>"}
    tokenizer = train_bpe_tokenizer(texts, vocab_size=512, special_tokens=special)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save(folder)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A chat-format micro run (4 held-out records) and its local engine's predictions."""
    root = tmp_path_factory.mktemp("openai")
    run_dir = root / "run"
    write_micro_run(run_dir)  # writes the micro data under root/micro_data
    train_records = read_records(sorted((root / "micro_data" / "train").glob("*.jsonl")))
    tokenizer = chat_tokenizer(root / "chat_tokenizer", train_records)
    config = write_micro_run(
        run_dir,
        [
            f"data.tokenizer.path={tokenizer}",
            "data.prompt_format=chat",
            "data.system_prompt='Correct the transcript.'",
            # one step at a tiny learning rate from a wide initialisation: prompt-dependent
            # arbitrary tokens (a briefly trained micro model answers with EOS or one word)
            "model.init_method_std=0.5",
            "train.lr=1e-5",
            "train.min_lr=1e-6",
            "train.max_steps=1",
            "generate.max_records_per_dataset=2",
        ],
    )
    run_distributed(train_run, 1, str(config))
    local = correct(run_dir)
    assert local.returncode == 0, local.stderr[-3000:]
    return run_dir


MISSING = [name for name in SERVING if importlib.util.find_spec(name) is None]
REQUIRED = os.environ.get("NEKO_REQUIRE_SERVING") == "1"
WHY = f"transformers serve needs {', '.join(MISSING)} (pip install -e .[serving])"
needs_server = pytest.mark.skipif(bool(MISSING) and not REQUIRED, reason=WHY)


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited ({process.returncode}): {log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the server was not ready in {timeout:.0f} s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(run_dir):
    """``transformers serve`` on a free port, serving the run's Hugging Face export; killed after
    the module. Yields ``(base URL, served model name, export folder)``."""
    if MISSING:
        pytest.fail(f"NEKO_REQUIRE_SERVING=1 but {WHY}")
    hf = run_dir.parent / "hf"
    export = python_m("nemo_neko.convert", "export", "--checkpoint", run_dir, "--out", hf)
    assert export.returncode == 0, export.stderr[-3000:]
    port = free_port()
    log = run_dir.parent / "serve.log"
    with open(log, "w") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "transformers.cli.transformers", "serve", str(hf)]
            + ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, log)
        yield f"{url}/v1", str(hf), hf
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
@needs_server
def test_served_export_predicts_what_the_local_engine_predicts(run_dir, server, tmp_path):
    base_url, model, hf = server
    out = tmp_path / "served.jsonl"
    done = correct(run_dir, "--engine", "openai", "--base-url", base_url, "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "correcting 4 records (0 already done)" in done.stdout
    local = {item["id"]: item for item in lines(run_dir / "predictions.jsonl")}
    served = {item["id"]: item for item in lines(out)}
    assert served.keys() == local.keys()
    assert {i: s["prediction"] for i, s in served.items()} == {
        i: item["prediction"] for i, item in local.items()
    }
    assert len({item["prediction"] for item in local.values()}) == 4  # prompt-dependent
    for i, item in served.items():
        assert set(item) == {"id", "prediction", "record", "source"}  # no routing from a server
        assert item["record"] == local[i]["record"]
        source = item["source"]
        assert source["engine"] == "openai"
        assert source["base_url"] == base_url
        assert source["served_model"] == model
        assert source["prompt"]["format"] == "chat"
        assert source["prompt"]["system_prompt"] == "Correct the transcript."
        generate = dict(local[i]["source"]["generate"], endpoint="completions")
        assert source["generate"] == generate
    assert read_records([records_beside(out)]) == read_records(
        [records_beside(run_dir / "predictions.jsonl")]
    )

    # the served folder's own tokenizer reads the text sent as the local engine's token ids
    from transformers import AutoTokenizer

    from nemo_neko.data.samples import SampleBuilder

    run = OmegaConf.load(run_dir / "config.yaml")
    ours = TextTokenizer.from_dir(run_dir / "tokenizer")
    theirs = AutoTokenizer.from_pretrained(hf)
    builder = SampleBuilder(ours, 256, "chat", run.data.system_prompt)
    record = read_records([run.data.test[0].paths[0]])[0]
    ids = builder.inference_prompt(record, reserve=25)
    text = ours.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\nCorrect the transcript.<|im_end|>\n")
    assert theirs(text)["input_ids"] == ids


@pytest.mark.slow
@needs_server
def test_served_predictions_resume_and_move_other_engines_aside(run_dir, server, tmp_path):
    base_url, _, _ = server
    out = tmp_path / "predictions.jsonl"
    shutil.copy(run_dir / "predictions.jsonl", out)  # the local engine's: another source
    routing = tmp_path / "predictions.routing.json"  # and its routing summary, not a server's
    shutil.copy(run_dir / "predictions.routing.json", routing)
    first = correct(
        run_dir, "--engine", "openai", "--base-url", base_url, "--out", out, "--concurrency", "3"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "moved to" in first.stdout and "correcting 4 records (0 already done)" in first.stdout
    aside = list(tmp_path.glob("predictions.step_*.jsonl"))
    assert len(aside) == 1 and len(lines(aside[0])) == 4
    assert not routing.exists() and aside[0].with_name(aside[0].stem + ".routing.json").exists()
    full = lines(out)
    kept = out.read_text().splitlines(keepends=True)[:1]
    out.write_text("".join(kept) + '{"id": "torn')  # one line and a torn one: killed mid-write
    again = correct(run_dir, "--engine", "openai", "--base-url", base_url, "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "correcting 3 records (1 already done)" in again.stdout
    assert sorted(map(json.dumps, lines(out))) == sorted(map(json.dumps, full))
    nothing = correct(run_dir, "--engine", "openai", "--base-url", base_url, "--out", out)
    assert "correcting 0 records (4 already done)" in nothing.stdout


def test_served_predictions_are_moved_aside_under_the_served_model_name(tmp_path):
    from nemo_neko.inference.provenance import resume

    out = tmp_path / "predictions.jsonl"
    served = {"engine": "openai", "base_url": "http://h:8000/v1", "served_model": "org/neko-hf"}
    out.write_text(
        json.dumps({"id": "a", "prediction": "", "record": "d", "source": served}) + "\n"
    )
    assert resume(out, served, {"a": "d"}) == {"a"}
    assert resume(out, {"checkpoint": "step_00000002", "fingerprint": "f"}, {"a": "d"}) == set()
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.openai-org_neko-hf.jsonl"]


@pytest.mark.slow
@needs_server
def test_a_model_the_server_does_not_serve_is_one_line(run_dir, server, tmp_path):
    base_url, model, _ = server
    out = tmp_path / "p.jsonl"
    done = correct(
        run_dir,
        "--engine",
        "openai",
        "--base-url",
        base_url,
        "--served-model",
        "nope",
        "--out",
        out,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {base_url} does not serve 'nope' (it serves: {model}); pass one of those as "
        f"--served-model"
    ]
    assert not out.exists()


def test_an_unreachable_server_is_one_line_before_any_work(tmp_path):
    """No server package needed: the run needs no checkpoint, only its config and tokenizer."""
    run_dir = tmp_path / "run"
    write_micro_run(run_dir, ["generate.max_records_per_dataset=1"])
    train_bpe_tokenizer(["list all flights from boston"] * 20, vocab_size=300).save(
        run_dir / "tokenizer"
    )
    port = free_port()  # nothing listens there
    out = tmp_path / "p.jsonl"
    base_url = f"http://127.0.0.1:{port}/v1"
    done = correct(run_dir, "--engine", "openai", "--base-url", base_url, "--out", out, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: cannot reach {base_url}/models (")
    assert line.endswith("is the server running?")
    assert not out.exists() and not records_beside(out).exists()
    missing = correct(run_dir, "--engine", "openai", "--out", out)
    assert missing.returncode == 2 and "--engine openai needs --base-url" in missing.stderr
