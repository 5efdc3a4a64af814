"""The leaderboard's test sets: names and discovery, and the session reference of chunked sets."""

import pytest

from nemo_neko.eval.leaderboard.sets import TestSet as LeaderboardSet
from nemo_neko.eval.leaderboard.sets import find_sets, session_references


def test_sets_by_name_and_from_a_folder_of_recipe_manifests(tmp_path):
    (tmp_path / "ami_cuts_cleaned_test.jsonl.gz").write_bytes(b"")
    (tmp_path / "librispeech_cuts_test.clean.jsonl.gz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a manifest")
    given = tmp_path / "x.jsonl.gz"
    given.write_bytes(b"")
    sets = find_sets([str(tmp_path), f"spgispeech_test={given}"])
    assert [s.name for s in sets] == [
        "ami_cleaned_test",
        "librispeech_test.clean",
        "spgispeech_test",
    ]
    assert (sets[1].dataset, sets[1].split) == ("librispeech", "test.clean")
    assert sets[1].manifest_name("nvidia/canary-1b-flash") == (
        "MODEL_nvidia-canary-1b-flash_DATASET_librispeech_test.clean.jsonl"
    )
    assert LeaderboardSet("tedlium", "t").split == "test"
    with pytest.raises(ValueError, match="set 'spgispeech_test' given twice"):
        find_sets([f"spgispeech_test={given}", f"spgispeech_test={given}"])
    with pytest.raises(ValueError, match="no such cut manifest"):
        find_sets([f"a_test={tmp_path / 'missing.jsonl.gz'}"])
    with pytest.raises(ValueError, match="must be <dataset>_<split>"):
        find_sets([f"a b={given}"])


def _chunk(parent, index, text, **extra):
    return {
        "id": f"{parent}-{index}",
        "parent_id": parent,
        "chunk_index": index,
        "text": text,
        **extra,
    }


def test_a_sessions_reference_for_every_way_chunked_cuts_carry_it():
    rows = [
        _chunk("a", 1, "world"),  # chunks with their own text: joined in chunk order
        _chunk("a", 0, "hello"),
        _chunk("b", 0, "the whole call"),  # every chunk holds the session's text (the leaderboard)
        _chunk("b", 1, "the whole call"),
        _chunk("c", 0, "x", parent_text="the given transcript"),
        _chunk("c", 1, "y", parent_text="the given transcript"),
        {"id": "plain", "text": "not chunked"},
    ]
    assert session_references(rows) == {
        "a": "hello world",
        "b": "the whole call",
        "c": "the given transcript",
    }
