"""The data_prep CLIs: --help imports neither torch, NeMo nor lhotse; plain commands work."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ["generate_nbest", "prepare_asr_corpus", "make_tiny_canary", "make_speech_corpus"]
HEAVY = ("torch", "nemo", "lhotse", "pocketsphinx")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_light(script):
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['{script}.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path(r'{REPO / 'data_prep' / (script + '.py')}', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "usage:" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout.splitlines()[-1]


def _run(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "data_prep" / "prepare_asr_corpus.py"), *args],
        capture_output=True,
        text=True,
    )


def test_prepare_cli_list_and_manual_download(tmp_path):
    listing = _run("list")
    assert listing.returncode == 0
    assert "librispeech" in listing.stdout and "test-clean,test-other" in listing.stdout
    manual = _run("download", "spgispeech", str(tmp_path))
    assert manual.returncode == 2 and "datasets.kensho.com" in manual.stderr


def test_generate_cli_rejects_options_of_another_backend(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "data_prep" / "generate_nbest.py"),
            "run",
            "x.jsonl.gz",
            "--out-dir",
            str(tmp_path),
            "--name",
            "n",
            "--dataset",
            "d",
            "--backend",
            "pocketsphinx",
            "--temperature",
            "0.3",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "--temperature is a canary option" in out.stderr
