"""The scoring benchmark runs end to end on a small input (speed is measured, not tested)."""

import json

from benchmarks import scoring


def test_scoring_benchmark_small(tmp_path, capsys):
    out = tmp_path / "bench.json"
    figures = scoring.main(
        ["--pairs", "3000", "--datasets", "3", "--repeats", "1", "--json", str(out)]
    )
    assert json.loads(out.read_text()) == figures
    assert figures["pairs"] == 3000
    for protocol in ("esb2024", "oal2026"):
        entry = figures["protocols"][protocol]
        assert entry["utterances_scored"] == 3000 - 3  # every 1000th reference is ignored
        assert entry["utterances_per_second"] > 0 and 0 < entry["composite_wer"] < 100
    printed = capsys.readouterr().out
    assert "esb2024: 3000 utterances (2997 scored)" in printed


def test_varied_pairs_look_like_raw_leaderboard_text():
    pairs = scoring.build_pairs(6)
    refs = [r for r, _ in pairs]
    assert refs[1][0].isupper() and refs[1].endswith(".")  # odd: sentence case and a period
    assert pairs[1][1].isupper()  # i % 3 == 1: upper-cased prediction
    assert ", " in pairs[2][1]  # i % 3 == 2: a comma
