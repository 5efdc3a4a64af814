"""Pure functions: the duplicate policies, the batch plan, shard assignment, seeds, progress."""

import io
import time

import pytest

from nemo_neko.asr.nbest import NBest, finalize_nbest, known_policies
from nemo_neko.asr.progress import Throughput
from nemo_neko.asr.sharding import Shard, batch_seed, fingerprint, plan_batches
from nemo_neko.utils.progress import Progress


def test_keep_truncates_and_keeps_duplicates():
    nbest = NBest.of(["a b", "a  b ", "c", "d", "e", "f"], [0, -1, -2, -3, -4, -5])
    out = finalize_nbest(nbest, 5, "keep")
    assert out.texts == ("a b", "a b", "c", "d", "e")  # whitespace normalised, duplicate kept
    assert out.scores == (0.0, -1.0, -2.0, -3.0, -4.0)
    assert finalize_nbest(NBest.of(["x", "y"]), 5, "keep").texts == ("x", "y")  # fewer stay fewer


def test_unique_pad_pads_by_repeating_the_unique_list():
    out = finalize_nbest(NBest.of(["a", "a", "b", "a"], [3, 2, 1, 0]), 5, "unique_pad")
    assert out.texts == ("a", "b", "a", "b", "a")
    assert out.scores == (3.0, 1.0, 3.0, 1.0, 3.0)  # each copy keeps its hypothesis' score
    assert finalize_nbest(NBest.of(list("abcdefg")), 3, "unique_pad").texts == ("a", "b", "c")
    assert finalize_nbest(NBest.of(["only"]), 2, "unique_pad").scores is None


def test_nbest_errors():
    assert known_policies() == ["keep", "unique_pad"]
    with pytest.raises(ValueError, match="unknown duplicate policy 'drop'.*keep, unique_pad"):
        finalize_nbest(NBest.of(["a"]), 1, "drop")
    with pytest.raises(ValueError, match="n must be >= 1"):
        finalize_nbest(NBest.of(["a"]), 0)
    with pytest.raises(ValueError, match="2 scores for 1 hypotheses"):
        NBest.of(["a"], [1, 2])
    with pytest.raises(ValueError, match="at least one"):
        NBest.of([])


def test_shard_parse_and_tags():
    assert Shard.parse("3/8") == Shard(3, 8) and Shard.parse(" 0 / 1 ") == Shard()
    assert Shard(3, 8).tag == "shard-00003-of-00008" and Shard().tag == ""
    for bad in ("8/8", "-1/2", "a/b", "3"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_plan_sorts_by_duration_and_bounds_batches():
    items = [("a", 1.0), ("b", 5.0), ("c", 3.0), ("d", 3.0), ("e", 0.5), ("f", 9.0)]
    assert plan_batches(items, batch_size=2) == [["f", "b"], ["c", "d"], ["a", "e"]]
    # padded seconds: len(batch) * longest <= 10 (f alone; b+c = 2 * 5; d+a+e = 3 * 3)
    assert plan_batches(items, batch_size=8, max_batch_seconds=10) == [
        ["f"], ["b", "c"], ["d", "a", "e"]
    ]  # fmt: skip
    assert plan_batches([("long", 30.0)], batch_size=4, max_batch_seconds=10) == [["long"]]
    with pytest.raises(ValueError, match="cut id 'a' appears more than once"):
        plan_batches([("a", 1.0), ("a", 2.0)], batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches(items, batch_size=0)


def test_shards_partition_the_plan_and_seeds_are_per_batch():
    plan = plan_batches([(f"u{i}", float(i % 7)) for i in range(50)], batch_size=4)
    owned = [[j for j in range(len(plan)) if Shard(i, 3).owns(j)] for i in range(3)]
    assert sorted(sum(owned, [])) == list(range(len(plan)))
    assert all(set(a).isdisjoint(b) for a in owned for b in owned if a is not b)
    seeds = [batch_seed(0, j) for j in range(len(plan))]
    assert len(set(seeds)) == len(seeds) and seeds == [batch_seed(0, j) for j in range(len(plan))]
    assert batch_seed(1, 0) != batch_seed(0, 0)
    assert fingerprint({"a": 1, "b": [2]}) == fingerprint({"b": [2], "a": 1})


def test_progress_reports_rates_without_a_terminal():
    stream = io.StringIO()  # not a TTY: plain lines
    progress = Progress(10, done=4, desc="test", unit="utt", stream=stream, interval=0.0)
    stats = Throughput(utterances=2, audio_seconds=6.0)
    time.sleep(0.01)
    progress.update(2, postfix=stats.postfix())
    stats.wall_seconds = progress.close()
    assert stats.rtfx == pytest.approx(6.0 / stats.wall_seconds)
    assert stats.utterances_per_second == pytest.approx(2 / stats.wall_seconds)
    text = stream.getvalue()
    assert "test: 6/10 utt (60.0%)" in text and "utt/s" in text and "ETA " in text, text
    assert "RTFx" in text and progress.rate == pytest.approx(2 / progress.elapsed, rel=0.5)
