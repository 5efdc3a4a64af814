"""``python -m nemo_neko.convert``: help without torch, clear errors before anything is written."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_neko.convert.__main__ import byte_size, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_imports_neither_torch_nor_megatron():
    code = (
        "import sys\n"
        "from nemo_neko.convert.__main__ import main\n"
        "for argv in (['--help'], ['import', '-h'], ['upcycle', '-h'], ['export', '-h']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('LOADED', 'torch' in sys.modules, 'megatron' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "LOADED False False" in out.stdout
    assert "--num-experts" in out.stdout and "--router-init" in out.stdout


def test_sizes():
    assert byte_size("5GB") == 5 * 10**9 and byte_size("2GiB") == 2 * 2**30
    assert byte_size("1234") == 1234


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _fails(argv, capsys, *messages):
    assert main(argv) == 1
    err = capsys.readouterr().err
    for message in messages:
        assert message in err, err


def test_missing_shard_is_named(hf_model, tmp_path, capsys):
    hf = _copy(hf_model("mixtral"), tmp_path / "hf")
    shard = sorted(hf.glob("model-*.safetensors"))[1]
    shard.unlink()
    out = tmp_path / "out"
    _fails(["import", "--hf", str(hf), "--out", str(out)], capsys, "missing shard", shard.name)
    assert not out.exists() and not (tmp_path / "out.incomplete").exists()


def test_config_and_architecture_mismatches(hf_model, tmp_path, capsys):
    hf = _copy(hf_model("mixtral"), tmp_path / "hf")
    out = str(tmp_path / "out")
    config = json.loads((hf / "config.json").read_text())

    fewer = dict(config, num_local_experts=2)  # the checkpoint holds 4
    (hf / "config.json").write_text(json.dumps(fewer))
    _fails(["import", "--hf", str(hf), "--out", out], capsys, "no place", "experts.2")

    wider = dict(config, intermediate_size=64)  # the experts are 48 wide
    (hf / "config.json").write_text(json.dumps(wider))
    _fails(["import", "--hf", str(hf), "--out", out], capsys, "mismatch", "w1.weight")

    other = dict(config, model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (hf / "config.json").write_text(json.dumps(other))
    _fails(["import", "--hf", str(hf), "--out", out], capsys, "'gpt2'", "not supported")

    (hf / "config.json").write_text(json.dumps(config))
    _fails(
        ["import", "--hf", str(hf), "--out", out, "--model", "tiny"],
        capsys,
        "does not match model config 'tiny'",
        "hidden_size: checkpoint 32 != config",
    )
    _fails(["upcycle", "--hf", str(hf), "--out", out], capsys, "already has 4 experts")
    assert not Path(out).exists()


@pytest.mark.parametrize(
    "kind,layout,message",
    [
        ("mixtral", ["--tensor", "3"], "num_attention_heads=4 is not divisible by TP=3"),
        ("mixtral", ["--expert", "3"], "num_experts=4 is not divisible by EP=3"),
        ("mixtral", ["--pipeline", "4"], "num_layers=2 is not divisible by PP x VPP=4"),
        ("gemma", ["--tensor", "2"], "key/value heads=1 is not divisible by TP=2"),
        ("gemma", ["--expert", "2"], "dense: expert parallelism EP=2 needs experts"),
    ],
)
def test_impossible_layouts(kind, layout, message, hf_model, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(["import", "--hf", str(hf_model(kind)), "--out", str(out), *layout], capsys, message)
    assert not out.exists()


def test_not_a_model_not_a_checkpoint_and_an_existing_output(hf_model, tmp_path, capsys):
    _fails(
        ["import", "--hf", str(tmp_path), "--out", str(tmp_path / "x")], capsys, "no config.json"
    )
    _fails(
        ["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "hf")],
        capsys,
        "not a NeKo checkpoint",
    )
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    argv = ["import", "--hf", str(hf_model("gemma")), "--out", str(taken)]
    _fails(argv, capsys, "exists and is not empty", "--overwrite")
    assert (taken / "file").exists()


def test_the_entry_point_reports_errors_cleanly(hf_model, tmp_path):
    hf = _copy(hf_model("gemma"), tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps(dict(config, head_dim=8)))  # stored: 16
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "nemo_neko.convert", "import", "--hf", str(hf), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    assert "error: config/checkpoint mismatch" in result.stderr
    assert not out.exists() and not (tmp_path / "out.incomplete").exists()
