"""``python -m nemo_neko.data``: import, stats and pack from the command line."""

import json
import subprocess
import sys
from pathlib import Path

from nemo_neko.data.cli import main
from nemo_neko.data.records import read_records
from nemo_neko.data.sample_data import sample_paths

FIXTURES = Path(__file__).parent / "fixtures" / "importers"


def test_import_writes_records_and_reports_skips(tmp_path, capsys):
    out = tmp_path / "coedit.jsonl.gz"
    assert (
        main(
            [
                "import",
                "coedit",
                str(FIXTURES / "coedit_train.jsonl"),
                str(out),
                "--dataset",
                "coedit",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    records = read_records(out)
    assert f"wrote {len(records)} records" in printed
    assert {r.task for r in records} == {"tec_grammar", "tec_coherence"}
    assert "'paraphrase'" in printed and "not a NeKo task" in printed


def test_import_option_and_bad_input(tmp_path, capsys):
    out = tmp_path / "ocr.jsonl"
    assert (
        main(
            [
                "import",
                "pleias_ocr",
                str(FIXTURES / "pleias_english.jsonl"),
                str(out),
                "--dataset",
                "pleias",
                "--option",
                "max_chars=50",
            ]
        )
        == 0
    )
    assert all(len(r.source) <= 50 and len(r.reference) <= 50 for r in read_records(out))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "task": "gec", "src": "no separator here", "tgt": "x"}\n')
    assert main(["import", "coedit", str(bad), str(tmp_path / "o.jsonl"), "--dataset", "c"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "'src'" in err


def test_stats_and_pack_on_the_sample(tmp_path, capsys):
    paths = [str(p) for p in sample_paths("test", ("atis", "td3"))]
    assert (
        main(
            [
                "stats",
                *paths,
                "--train-tokenizer",
                "1024",
                "--max-length",
                "256",
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["atis"]["records"] == 809 and stats["atis"]["wer_1best"] == 8.4  # README figure
    assert stats["td3"]["records"] == 289 and stats["td3"]["tokens"] > 0
    assert "hypotheses_dropped" in capsys.readouterr().out
    assert (
        main(
            [
                "pack",
                f"atis={paths[0]}",
                f"td3={paths[1]}",
                "--train-tokenizer",
                "1024",
                "--seq-length",
                "1024",
                "--json",
                str(tmp_path / "p.json"),
            ]
        )
        == 0
    )
    packed = json.loads((tmp_path / "p.json").read_text())
    assert packed["samples"] == 809 + 289 and packed["efficiency"] > 0.9


def test_help_does_not_import_torch_or_megatron():
    code = (
        "import sys, runpy; sys.argv=['x', '--help']\n"
        "try:\n runpy.run_module('nemo_neko.data', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('torch' in sys.modules, any(m.startswith('megatron') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False False")
