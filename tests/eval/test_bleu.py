"""BLEU in the report against sacrebleu's own command line on the same text files."""

import subprocess
import sys

import pytest
from sacrebleu import sentence_bleu

from nemo_neko.data.records import CorrectionRecord
from nemo_neko.eval import metrics
from nemo_neko.eval.report import build_report

EN_DE = [
    ("Das Haus ist groß.", ["Das Haus ist gross.", "Das Haus ist groß .", "Ein Haus ist groß."]),
    (
        "Ich habe heute keine Zeit, leider.",
        ["Ich habe heute keine Zeit leider.", "Ich hab heute keine Zeit, leider."],
    ),
    ("Wo ist der Bahnhof?", ["Wo ist die Bahnhof?", "Wo ist der Bahnhof?"]),
    (
        "Er liest ein Buch über Geschichte.",
        ["Er ließt ein Buch über Geschichte.", "Er liest ein Buch zur Geschichte."],
    ),
    ("Wir fahren morgen nach Berlin.", ["Wir fahren morgen nach Berlin", "Wir fahren Morgen."]),
]
EN_ZH = [
    ("我今天很高兴见到你。", ["我今天很高兴看到你。", "我今天很高兴见到你"]),
    ("这本书非常有意思。", ["这本书非常有意识。", "这书非常有意思。"]),
    ("明天会下雨吗？", ["明天会下雨吗?", "明天回下雨吗？"]),
    ("他在北京工作了三年。", ["他在北京工作了3年。", "他在背景工作了三年。"]),
]
EN_JA = [
    ("今日は良い天気です。", ["今日はいい天気です。", "今日は良い天気です"]),
    ("駅はどこですか？", ["駅はどこですか?", "液はどこですか？"]),
    ("私は毎朝コーヒーを飲みます。", ["私は毎朝コーヒーを飲む。", "私は毎朝紅茶を飲みます。"]),
]


def records(data, task, dataset, tgt):
    return [
        CorrectionRecord(
            f"{dataset}-{i}", task, dataset, ref, hypotheses=hyps, src_lang="en", tgt_lang=tgt
        )
        for i, (ref, hyps) in enumerate(data)
    ]


def sacrebleu_cli(tmp_path, hyps, refs, tokenize):
    """Corpus BLEU from ``python -m sacrebleu`` on files, 4 decimals."""
    (tmp_path / "hyp.txt").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    ref, hyp = str(tmp_path / "ref.txt"), str(tmp_path / "hyp.txt")
    out = subprocess.run(
        [sys.executable, "-m", "sacrebleu", ref, "-i", hyp, "-tok", tokenize, "-b", "-w", "4"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def check_against_cli(tmp_path, data, task, dataset, tgt, tokenize):
    recs = records(data, task, dataset, tgt)
    predictions = {r.id: r.hypotheses[-1] for r in recs}
    (row,) = build_report(recs, predictions).rows
    refs = [ref for ref, _ in data]
    assert row.metric == "bleu" and row.language == tgt
    assert round(row.baseline, 4) == sacrebleu_cli(
        tmp_path, [h[0] for _, h in data], refs, tokenize
    )
    assert round(row.corrected, 4) == sacrebleu_cli(
        tmp_path, [h[-1] for _, h in data], refs, tokenize
    )
    # N-best oracle: per sentence the hypothesis with the best sacrebleu sentence BLEU (raw text,
    # sacrebleu's own tokenisation), then the CLI's corpus BLEU over those picks
    picks = []
    for ref, hyps in data:
        scores = [sentence_bleu(h, [ref], tokenize=tokenize).score for h in hyps]
        picks.append(hyps[scores.index(max(scores))])
    assert round(row.nbest_oracle, 4) == sacrebleu_cli(tmp_path, picks, refs, tokenize)
    assert row.nbest_oracle >= row.baseline
    assert row.relative_improvement == pytest.approx(
        100 * (row.corrected - row.baseline) / row.baseline
    )
    return row


def test_bleu_13a_matches_sacrebleu_cli(tmp_path):
    row = check_against_cli(tmp_path, EN_DE, "mt", "wmt_de", "de", "13a")
    assert row.tokenization == "13a"


def test_bleu_zh_matches_sacrebleu_cli(tmp_path):
    row = check_against_cli(tmp_path, EN_ZH, "st", "covost_zh", "zh-CN", "zh")
    assert row.tokenization == "zh"


def test_bleu_ja_mecab_matches_sacrebleu_cli(tmp_path):
    pytest.importorskip("MeCab", reason="ja-mecab needs mecab-python3 + ipadic")
    pytest.importorskip("ipadic")
    row = check_against_cli(tmp_path, EN_JA, "st", "covost_ja", "ja", "ja-mecab")
    assert row.tokenization.startswith("ja-mecab") and row.warning is None


def test_ja_without_mecab_falls_back_to_char_with_a_warning(tmp_path, monkeypatch):
    import sacrebleu.tokenizers.tokenizer_ja_mecab as ja_module

    monkeypatch.setattr(ja_module, "MeCab", None)  # as if mecab-python3 were not installed
    metrics.sacrebleu_tokenizer.cache_clear()
    try:
        with pytest.warns(UserWarning, match="tokeniser ja-mecab unavailable.*used char"):
            report = build_report(records(EN_JA, "st", "covost_ja", "ja"))
    finally:
        metrics.sacrebleu_tokenizer.cache_clear()
    (row,) = report.rows
    assert row.tokenization == "char" and "sacrebleu[ja]" in row.warning
    assert row.warning in report.notes
    assert round(row.baseline, 4) == sacrebleu_cli(
        tmp_path, [h[0] for _, h in EN_JA], [r for r, _ in EN_JA], "char"
    )


def test_mixed_tasks_get_one_row_per_dataset_task_and_language():
    recs = records(EN_DE, "mt", "wmt", "de") + records(EN_ZH, "st", "covost", "zh")
    recs += [CorrectionRecord("a1", "asr", "ls", "a b", hypotheses=["a c"])]
    report = build_report(recs)
    assert [(r.dataset, r.task, r.metric) for r in report.rows] == [
        ("wmt", "mt", "bleu"), ("covost", "st", "bleu"), ("ls", "asr", "wer"),
    ]  # fmt: skip
    assert [m.task for m in report.task_means] == ["mt", "st", "asr"]
