"""Leaderboard manifests: file naming, validation errors, chunk merging."""

import pytest

from nemo_neko.eval.inputs import InputError
from nemo_neko.eval.manifests import (
    UNNAMED_MODEL,
    expand_inputs,
    merge_chunks,
    parse_leaderboard_name,
    read_manifest,
)

from .helpers import manifest_rows

AMI = "MODEL_openai-whisper-large-v3_DATASET_hf-audio-esb-datasets-test-only-sorted_ami_test.jsonl"


def test_leaderboard_name_parsing():
    source = parse_leaderboard_name(f"results/{AMI}")
    assert source.model == "openai-whisper-large-v3"
    assert source.dataset == "hf-audio-esb-datasets-test-only-sorted_ami_test"
    assert source.split == "test"
    ls = parse_leaderboard_name("MODEL_nvidia-parakeet_DATASET_esb_librispeech_test.clean.jsonl")
    assert (ls.model, ls.dataset, ls.split) == (
        "nvidia-parakeet",
        "esb_librispeech_test.clean",
        "test.clean",
    )


@pytest.mark.parametrize(
    "name", ["ami_test.jsonl", "MODEL_x_DATASET_nosplit.jsonl", "MODEL_x_DATASET_a_b.json"]
)
def test_names_off_the_leaderboard_scheme_are_rejected(name):
    with pytest.raises(
        ValueError, match="MODEL_<model>_DATASET_<dataset>_<split>.jsonl; pass it as name=path"
    ):
        parse_leaderboard_name(name)


def test_expand_inputs_files_directories_pairs_and_duplicates(write, tmp_path):
    rows = manifest_rows([("a", "a")])
    a = write(f"run/{AMI}", rows)
    write("run/sub/MODEL_openai-whisper-large-v3_DATASET_esb_voxpopuli_test.jsonl", rows)
    other = write("other.jsonl", rows)
    sources = expand_inputs([str(tmp_path / "run"), f"mine={other}"])
    assert [s.dataset for s in sources] == [
        "hf-audio-esb-datasets-test-only-sorted_ami_test",
        "esb_voxpopuli_test",
        "mine",
    ]
    assert sources[2].model == UNNAMED_MODEL and sources[2].path == str(other)
    with pytest.raises(ValueError, match="given twice"):
        expand_inputs([str(a), str(tmp_path / "run")])
    with pytest.raises(ValueError, match="does not follow the leaderboard naming"):
        expand_inputs([str(other)])
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_inputs(["x=does/not/exist.jsonl"])
    with pytest.raises(FileNotFoundError):
        expand_inputs([str(tmp_path / "missing.jsonl")])


def test_read_manifest_fields(write):
    path = write(
        "m.jsonl", [{"text": "ref", "pred_text": "hyp", "duration": 2, "time": 0.5, "extra": 1}]
    )
    (row,) = read_manifest(path)
    assert (row.line, row.text, row.pred_text, row.duration, row.time) == (
        1,
        "ref",
        "hyp",
        2.0,
        0.5,
    )


@pytest.mark.parametrize(
    "lines,line,field,message",
    [
        ([{"pred_text": "x"}], 1, "text", "missing required field"),
        (
            [{"text": "a", "pred_text": "a"}, {"text": "b"}],
            2,
            "pred_text",
            "missing required field",
        ),
        ([{"text": "a", "pred_text": None}], 1, "pred_text", "must be a string"),
        ([{"text": 3, "pred_text": "x"}], 1, "text", "must be a string"),
        (['{"text": "a", "pred_text": "a"}', '{"text": "b", pred_text'], 2, None, "malformed JSON"),
        (["[1, 2]"], 1, None, "expected a JSON object"),
        ([{"text": "a", "pred_text": "a", "duration": "3s"}], 1, "duration", "number of seconds"),
        ([{"text": "a", "pred_text": "a", "time": -1}], 1, "time", "finite number >= 0"),
        ([{"text": "a", "pred_text": "a", "parent_id": "s1"}], 1, "chunk_index", "need both"),
        (
            [{"text": "a", "pred_text": "a", "parent_id": "s", "chunk_index": -1}],
            1,
            "chunk_index",
            ">= 0",
        ),
        (
            [
                {"text": "a", "pred_text": "a"},
                {"text": "a", "pred_text": "a", "parent_id": "s", "chunk_index": 0},
            ],
            2,
            "parent_id",
            "chunk fields on some rows only",
        ),
    ],
)
def test_bad_manifest_lines_name_file_line_and_field(write, lines, line, field, message):
    path = write("bad.jsonl", lines)
    with pytest.raises(InputError, match=message) as info:
        read_manifest(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert str(err).startswith(f"{path}:{line}: ")


def test_empty_manifest_is_an_error(write):
    with pytest.raises(InputError, match="no rows"):
        read_manifest(write("empty.jsonl", ["", "  "]))


def chunk(parent, index, pred, text="a b c d", duration=1.0, time=0.25, line=0):
    return {
        "parent_id": parent,
        "chunk_index": index,
        "text": text,
        "pred_text": pred,
        "duration": duration,
        "time": time,
    }


def test_merge_chunks_concatenates_in_index_order(write):
    path = write(
        "c.jsonl",
        [
            chunk("s2", 0, "x"),
            chunk("s1", 2, " d "),
            chunk("s1", 0, "a"),
            chunk("s1", 1, "   "),  # empty chunk prediction left out
            chunk("s1", 3, "b c", time=None),
        ],
    )
    merged, notes = merge_chunks(read_manifest(path), str(path))
    assert [(r.audio_filepath, r.pred_text) for r in merged] == [("s1", "a d b c"), ("s2", "x")]
    assert merged[0].duration == 4.0 and merged[0].time is None  # a missing time: no sum
    assert merged[1].duration == 1.0 and merged[1].time == 0.25
    assert notes == []


def test_merge_chunks_notes_gaps_and_rejects_inconsistent_sessions(write):
    gap = write("gap.jsonl", [chunk("s", 0, "a"), chunk("s", 2, "c")])
    merged, notes = merge_chunks(read_manifest(gap), str(gap))
    assert merged[0].pred_text == "a c"
    assert len(notes) == 1 and "chunk indices [0, 2] are not contiguous" in notes[0]
    twice = write("twice.jsonl", [chunk("s", 0, "a"), chunk("s", 0, "b")])
    with pytest.raises(InputError, match="chunk 0 twice") as info:
        merge_chunks(read_manifest(twice), str(twice))
    assert info.value.line == 2 and info.value.field == "chunk_index"
    differ = write("differ.jsonl", [chunk("s", 0, "a"), chunk("s", 1, "b", text="other")])
    with pytest.raises(InputError, match="same session reference") as info:
        merge_chunks(read_manifest(differ), str(differ))
    assert info.value.line == 2 and info.value.field == "text"


def test_unchunked_rows_are_left_alone(write):
    path = write("plain.jsonl", manifest_rows([("a", "b"), ("c", "d")]))
    rows = read_manifest(path)
    assert merge_chunks(rows, str(path)) == (rows, [])
