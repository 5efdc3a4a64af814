"""Corpus recipes: lhotse's real prepare_librispeech on a synthesised corpus in LibriSpeech's
layout; idempotence and validation plumbing of every recipe; Earnings-22 segmentation."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from nemo_neko.data.records import RecordError
from tests.asr._tools import need, need_speech


def test_prepare_librispeech_real_layout(manifests, speech_corpus):
    from lhotse import CutSet

    assert set(manifests) == {"train-clean-100", "test-clean"}
    cuts = CutSet.from_file(manifests["train-clean-100"])
    assert len(cuts) == 10
    transcripts = {}
    for path in (speech_corpus / "train-clean-100").rglob("*.trans.txt"):
        for line in path.read_text().splitlines():
            utt, text = line.split(" ", 1)
            transcripts[utt] = text
    for cut in cuts:
        (sup,) = cut.supervisions
        assert sup.text == transcripts[cut.id].lower()  # lower-cased by default
        audio = cut.load_audio()
        assert audio.shape == (1, round(cut.duration * 16000)) and np.abs(audio).max() > 0.05
    assert len(CutSet.from_file(manifests["test-clean"])) == 2


def test_prepare_skips_complete_parts_and_rebuilds_broken_ones(
    speech_corpus, tmp_path, monkeypatch
):
    import lhotse.recipes

    from nemo_neko.asr.recipes.librispeech import prepare_librispeech

    out = tmp_path / "m"
    first = prepare_librispeech(speech_corpus, out, ["test-clean"])
    path = first["test-clean"]
    stamp, content = os.stat(path).st_mtime_ns, path.read_bytes()

    def must_not_run(*args, **kwargs):
        raise AssertionError("lhotse was run for a complete part")

    monkeypatch.setattr(lhotse.recipes, "prepare_librispeech", must_not_run)
    assert prepare_librispeech(speech_corpus, out, ["test-clean"]) == first
    assert os.stat(path).st_mtime_ns == stamp
    monkeypatch.undo()

    path.write_bytes(gzip.compress(b'{"id": "broken"}\n'))  # damaged: rebuilt, same bytes
    prepare_librispeech(speech_corpus, out, ["test-clean"])
    assert path.read_bytes() == content
    prepare_librispeech(speech_corpus, out, ["test-clean"], force=True)
    assert path.read_bytes() == content


def test_prepare_librispeech_missing_part(speech_corpus, tmp_path):
    from nemo_neko.asr.recipes.librispeech import prepare_librispeech

    with pytest.raises(FileNotFoundError, match="dev-other.*not found"):
        prepare_librispeech(speech_corpus, tmp_path, ["dev-other"])


def test_invalid_cuts_are_not_written(tmp_path):
    need("lhotse")
    from lhotse.testing.dummies import dummy_cut, dummy_supervision

    from nemo_neko.asr.recipes._common import write_validated

    good = dummy_cut(0, supervisions=[dummy_supervision(0, text="a")])
    two = dummy_cut(
        1, supervisions=[dummy_supervision(1, text="a"), dummy_supervision(2, text="b")]
    )
    target = tmp_path / "x_cuts_train.jsonl.gz"
    with pytest.raises(
        RecordError, match=r"x_cuts_train.jsonl.gz:2: field 'supervisions'.*2 supervisions"
    ):
        write_validated(target, [good, two])
    no_text = dummy_cut(2, supervisions=[dummy_supervision(3, text=None)])
    with pytest.raises(RecordError, match=r":1: field 'supervisions\[0\].text'"):
        write_validated(target, [no_text])
    assert list(tmp_path.iterdir()) == []  # nothing landed, no temporary left


def _long_form(tmp_path, name, n_recordings=2):
    """Recordings of 3 synthesised sentences each and one supervision per sentence."""
    import soundfile as sf
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    from nemo_neko.asr.synth import SENTENCES, synthesize

    recs, sups = [], []
    for r in range(n_recordings):
        pieces, start = [], 0.0
        for s in range(3):
            text = SENTENCES[3 * r + s]
            audio = synthesize(text)
            sups.append(
                SupervisionSegment(
                    f"{name}-{r}-{s}", f"{name}-{r}", start, len(audio) / 16000, text=text
                )
            )
            pieces += [audio, np.zeros(4000, dtype=np.float32)]
            start += (len(audio) + 4000) / 16000
        path = tmp_path / f"{name}-{r}.wav"
        sf.write(path, np.concatenate(pieces), 16000)
        recs.append(Recording.from_file(path, recording_id=f"{name}-{r}"))
    return RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups)


# (corpus, lhotse function, manifests nested under a language key)
LHOTSE_RECIPES = [
    ("tedlium", "prepare_tedlium", False),
    ("gigaspeech", "prepare_gigaspeech", False),
    ("spgispeech", "prepare_spgispeech", False),
    ("ami", "prepare_ami", False),
    ("voxpopuli", "prepare_voxpopuli", False),
    ("commonvoice", "prepare_commonvoice", True),
]


@pytest.mark.parametrize("corpus,function,by_language", LHOTSE_RECIPES)
def test_recipe_plumbing(corpus, function, by_language, tmp_path, monkeypatch):
    """Each recipe calls its lhotse prepare_* (stubbed: no corpus on disk), cuts long recordings
    into one cut per supervision, writes validated manifests, and skips them on a rerun."""
    need("lhotse")
    need_speech()
    import lhotse.recipes
    from lhotse import CutSet

    from nemo_neko.asr.recipes import corpus_info, recipe

    info = corpus_info(corpus)
    parts = [info.train_parts[0], info.eval_parts[0]]
    calls = []
    manifests = {}
    for part in parts:
        recordings, supervisions = _long_form(tmp_path, f"{corpus}-{part}")
        manifests[part] = {"recordings": recordings, "supervisions": supervisions}

    def fake_prepare(*args, **kwargs):
        calls.append((args, kwargs))
        return {"en": manifests} if by_language else manifests

    monkeypatch.setattr(lhotse.recipes, function, fake_prepare)
    prepare = getattr(recipe(corpus), f"prepare_{corpus}")
    out = tmp_path / "manifests"
    paths = prepare(tmp_path / "corpus", out, parts)
    assert len(calls) == 1 and Path(calls[0][0][0]) == tmp_path / "corpus"
    for part in parts:
        assert paths[part] == out / f"{corpus}_cuts_{part}.jsonl.gz"
        cuts = CutSet.from_file(paths[part])
        assert len(cuts) == 6  # 2 recordings x 3 supervisions
        assert all(len(c.supervisions) == 1 and c.supervisions[0].start == 0 for c in cuts)
        assert {c.supervisions[0].text for c in cuts} == {
            s.text for s in manifests[part]["supervisions"]
        }
    prepare(tmp_path / "corpus", out, parts)
    assert len(calls) == 1  # complete parts: lhotse not run again
    assert getattr(recipe(corpus), f"download_{corpus}")  # every recipe has a download_<corpus>


def test_corpus_registry_and_manual_downloads(tmp_path):
    from nemo_neko.asr.recipes import CORPORA, ManualDownloadRequired, leaderboard_test_sets, recipe

    assert CORPORA == (
        "librispeech",
        "tedlium",
        "gigaspeech",
        "spgispeech",
        "earnings22",
        "ami",
        "voxpopuli",
        "commonvoice",
        "open_asr_leaderboard",
    )
    tests = leaderboard_test_sets()
    assert tests["librispeech"] == ("test-clean", "test-other") and tests["gigaspeech"] == ("TEST",)
    assert recipe("ami").CORPUS.select(["train", "eval"]) == ["train", "test"]
    for corpus in ("spgispeech", "earnings22"):
        with pytest.raises(ManualDownloadRequired, match="https://"):
            getattr(recipe(corpus), f"download_{corpus}")(tmp_path)
    with pytest.raises(ValueError, match="unknown corpus 'timit'"):
        recipe("timit")


ALIGNED = """token|speaker|ts|endTs|punctuation|prepunctuation|case|tags|oldTs|oldEndTs|ali_comment
Good|0|0.10|0.40|||UC|[]|||
morning|0|0.40|0.90|.||LC|[]|||
This|0|1.00|1.20|||UC|[]|||
is|0|||||LC|[]|||del
the|0|1.30|1.40|||LC|[]|||
call|0|1.40|1.80|||LC|[]|||
after|0|4.50|4.90|||LC|[]|||
a|0|4.90|5.00|||LC|[]|||
pause|0|5.00|5.40|.||LC|[]|||
Thank|1|5.60|5.80|||UC|[]|||
you|1|5.80|6.00|,||LC|[]|||
"""


def test_earnings22_segmentation_rules(tmp_path):
    from nemo_neko.asr.recipes.earnings22 import read_aligned_nlp, segment_tokens

    path = tmp_path / "call.aligned.nlp"
    path.write_text(ALIGNED)
    tokens = read_aligned_nlp(path)
    assert len(tokens) == 11 and tokens[3].start is None
    segments = segment_tokens(tokens, max_pause=2.0)
    assert [(s.start, s.end, s.text, s.speaker) for s in segments] == [
        (0.1, 0.9, "Good morning", "0"),  # sentence end
        (1.0, 1.8, "This is the call", "0"),  # untimed word kept; split at the 2.7 s pause
        (4.5, 5.4, "after a pause", "0"),
        (5.6, 6.0, "Thank you", "1"),  # speaker change, then the end of the file
    ]
    short = segment_tokens(tokens, max_duration=0.5, max_pause=10)
    assert all(s.end - s.start <= 0.5 + 1e-9 for s in short) and len(short) > 4
    assert segment_tokens(tokens, normalize_text=True)[0].text == "good morning"

    bad = tmp_path / "bad.aligned.nlp"
    bad.write_text(ALIGNED.replace("0.40|0.90", "0.40|zero"))
    with pytest.raises(RecordError, match=r"bad.aligned.nlp:3: field 'endTs': not a time"):
        read_aligned_nlp(bad)
    bad.write_text("token|speaker|ts\nx|0|1\n")
    with pytest.raises(RecordError, match=r":1: field 'endTs'"):
        read_aligned_nlp(bad)


def test_earnings22_cuts_from_aligned_references(tmp_path, monkeypatch):
    """prepare_earnings22: lhotse's recordings (stubbed) cut into utterances, split by file."""
    need("lhotse")
    need_speech()
    import lhotse.recipes
    from lhotse import CutSet, SupervisionSegment, SupervisionSet

    from nemo_neko.asr.recipes.earnings22 import prepare_earnings22

    recordings, _ = _long_form(tmp_path, "call", n_recordings=2)
    aligned = tmp_path / "corpus" / "transcripts" / "force_aligned_nlp_references"
    aligned.mkdir(parents=True)
    for rec in recordings:
        (aligned / f"{rec.id}.aligned.nlp").write_text(ALIGNED)
    whole = SupervisionSet.from_segments(
        SupervisionSegment(r.id, r.id, 0, r.duration, text="...", language="English-Ghana")
        for r in recordings
    )
    monkeypatch.setattr(lhotse.recipes, "prepare_earnings22", lambda *a, **k: (recordings, whole))

    with pytest.raises(ValueError, match="no official splits.*split-file"):
        prepare_earnings22(tmp_path / "corpus", tmp_path / "m", ["test"])
    paths = prepare_earnings22(tmp_path / "corpus", tmp_path / "m")
    cuts = CutSet.from_file(paths["all"])
    assert len(cuts) == 8  # 4 utterances per call
    first = sorted(cuts, key=lambda c: c.id)[0]
    assert first.id.startswith("call-0-00000") and first.supervisions[0].text == "Good morning"
    assert (
        first.duration == pytest.approx(0.8) and first.supervisions[0].language == "English-Ghana"
    )

    split = tmp_path / "split.tsv"
    split.write_text("call-0\ttrain\ncall-1\ttest\n")
    paths = prepare_earnings22(tmp_path / "corpus", tmp_path / "m2", split_file=str(split))
    assert sorted(paths) == ["test", "train"]
    assert {c.recording_id for c in CutSet.from_file(paths["test"])} == {"call-1"}
