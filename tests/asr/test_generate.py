"""N-best generation jobs: outputs and records, the importer round trip, shards, resume after an
interruption and after SIGKILL, idempotence, bad input."""

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_neko.data.records import RecordError, read_records
from tests.asr._tools import need

REPO = Path(__file__).resolve().parents[2]


def _config(manifests, out_dir, **kwargs):
    from nemo_neko.asr.generate import GenerateConfig

    base = {
        "cuts": str(manifests["train-clean-100"]),
        "out_dir": str(out_dir),
        "name": "libri",
        "dataset": "librispeech",
        "backend": "canary",
        "batch_size": 3,
    }
    return GenerateConfig(**{**base, **kwargs})


@pytest.fixture(scope="module")
def beam(canary_model):
    from nemo_neko.asr.backends.canary import CanaryBackend, CanaryConfig

    return CanaryBackend(CanaryConfig(model="tiny", device="cpu", method="beam", n=5), canary_model)


def _bytes(path):
    return (
        gzip.decompress(Path(path).read_bytes())
        if str(path).endswith(".gz")
        else Path(path).read_bytes()
    )


def test_canary_job_writes_nbest_cuts_and_importer_identical_records(manifests, beam, tmp_path):
    from lhotse import CutSet

    from nemo_neko.asr.generate import generate_nbest
    from nemo_neko.data.importers.lhotse_cuts import import_lhotse_cuts

    config = _config(manifests, tmp_path, backend_options={"model": "tiny", "method": "beam"})
    report = generate_nbest(config, backend=beam)
    assert report.utterances == 10 and not report.skipped and report.throughput.utterances == 10
    assert report.throughput.rtfx > 0 and report.throughput.utterances_per_second > 0
    cuts = list(CutSet.from_file(report.cuts_path))
    source = {c.id: c for c in CutSet.from_file(manifests["train-clean-100"])}
    assert sorted(c.id for c in cuts) == [c.id for c in cuts] == sorted(source)
    for cut in cuts:
        custom = cut.supervisions[0].custom
        assert len(custom["nbest"]) == 5 and len(custom["nbest_scores"]) == 5
        assert custom["nbest_method"] == "canary-beam5"
        assert cut.supervisions[0].text == source[cut.id].supervisions[0].text
    records = read_records(report.records_path)
    assert records == list(import_lhotse_cuts(report.cuts_path, dataset="librispeech"))
    assert all(r.task == "asr" and len(r.hypotheses) == 5 for r in records)
    assert records[0].meta["nbest_scores"] == cuts[0].supervisions[0].custom["nbest_scores"]
    assert not (tmp_path / ".libri.parts").exists()
    assert (tmp_path / "libri.job.json").is_file()

    stamp = os.stat(report.records_path).st_mtime_ns
    again = generate_nbest(config, backend=beam)  # finished: skipped, files untouched
    assert again.skipped and os.stat(report.records_path).st_mtime_ns == stamp
    changed = _config(manifests, tmp_path, backend_options={"model": "tiny", "method": "sample"})
    with pytest.raises(RuntimeError, match="made by a different job"):
        generate_nbest(changed, backend=beam)


def test_sampling_job_has_configured_count_and_no_scores(manifests, canary_model, tmp_path):
    from nemo_neko.asr.backends.canary import CanaryBackend, CanaryConfig
    from nemo_neko.asr.generate import generate_nbest

    backend = CanaryBackend(
        CanaryConfig(model="tiny", device="cpu", method="sample", n=4, temperature=0.3),
        canary_model,
    )
    config = _config(manifests, tmp_path, n=4, duplicates="unique_pad")
    records = read_records(generate_nbest(config, backend=backend).records_path)
    assert len(records) == 10 and all(len(r.hypotheses) == 4 for r in records)
    assert all("nbest_scores" not in r.meta for r in records)
    assert {r.meta["custom"]["nbest_method"] for r in records} == {"canary-sample4-t0.3"}


def test_shard_union_equals_unsharded_run(manifests, beam, tmp_path):
    from nemo_neko.asr.generate import generate_nbest, merge_shards
    from nemo_neko.asr.sharding import Shard

    whole = generate_nbest(_config(manifests, tmp_path / "one"), backend=beam)
    sizes = []
    for i in (2, 0, 1):  # any order, e.g. array tasks finishing out of order
        report = generate_nbest(
            _config(manifests, tmp_path / "three", shard=Shard(i, 3)), backend=beam
        )
        sizes.append(report.utterances)
        assert report.cuts_path.name == f"libri.shard-{i:05d}-of-00003.cuts.jsonl.gz"
        if i == 0:
            with pytest.raises(FileNotFoundError, match="1 of 3 shards not finished.*shard-00001"):
                merge_shards(tmp_path / "three", "libri", 3, "librispeech")
    assert sum(sizes) == 10 and all(sizes)
    cuts, records = merge_shards(tmp_path / "three", "libri", 3, "librispeech")
    assert cuts.read_bytes() == whole.cuts_path.read_bytes()
    assert records.read_bytes() == whole.records_path.read_bytes()


class Interrupted(Exception):
    pass


class DiesAfter:
    """A backend that recognises ``batches`` batches, then raises (a simulated crash)."""

    def __init__(self, backend, batches):
        self.backend, self.left, self.method = backend, batches, backend.method

    def describe(self):
        return self.backend.describe()

    def recognize(self, audio, seed):
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        return self.backend.recognize(audio, seed)


def test_interrupted_run_resumes_to_identical_output(manifests, beam, tmp_path):
    from nemo_neko.asr.generate import generate_nbest

    reference = generate_nbest(_config(manifests, tmp_path / "ref"), backend=beam)
    config = _config(manifests, tmp_path / "run")
    with pytest.raises(Interrupted):
        generate_nbest(config, backend=DiesAfter(beam, 2))
    parts = sorted((tmp_path / "run" / ".libri.parts").glob("batch-*.cuts.jsonl.gz"))
    assert len(parts) == 2 and not (tmp_path / "run" / "libri.cuts.jsonl.gz").exists()
    resumed = generate_nbest(config, backend=DiesAfter(beam, 2))  # 4 batches, 2 were done
    assert resumed.resumed == 6 and resumed.throughput.utterances == 4  # 3 + 3 done, 3 + 1 left
    assert resumed.cuts_path.read_bytes() == reference.cuts_path.read_bytes()
    assert resumed.records_path.read_bytes() == reference.records_path.read_bytes()

    other = _config(manifests, tmp_path / "other")
    with pytest.raises(Interrupted):
        generate_nbest(other, backend=DiesAfter(beam, 1))
    with pytest.raises(RuntimeError, match="partial results of a different job"):
        generate_nbest(_config(manifests, tmp_path / "other", seed=5), backend=beam)


@pytest.mark.slow
def test_sigkilled_process_restarts_to_identical_output(manifests, tmp_path):
    """A real CLI process killed with SIGKILL mid-run, started again: same files as a run that
    was never interrupted, nothing missing, nothing duplicated."""
    need("pocketsphinx")
    from nemo_neko.asr.generate import generate_nbest

    cuts = str(manifests["train-clean-100"])
    reference = generate_nbest(
        _config(
            manifests,
            tmp_path / "ref",
            backend="pocketsphinx",
            batch_size=1,
            duplicates="unique_pad",
        )
    )
    command = [
        sys.executable,
        str(REPO / "data_prep" / "generate_nbest.py"),
        "run",
        cuts,
        "--out-dir",
        str(tmp_path / "run"),
        "--name",
        "libri",
        "--dataset",
        "librispeech",
        "--backend",
        "pocketsphinx",
        "--batch-size",
        "1",
        "--duplicates",
        "unique_pad",
    ]
    parts = tmp_path / "run" / ".libri.parts"
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("batch-*.cuts.jsonl.gz"))) < 3:
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("batch-*.cuts.jsonl.gz")))
    assert 3 <= done < 10 and not (tmp_path / "run" / "libri.cuts.jsonl.gz").exists()

    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"resuming, {done} of 10 utterances already done" in finished.stderr
    run_cuts = tmp_path / "run" / "libri.cuts.jsonl.gz"
    assert run_cuts.read_bytes() == reference.cuts_path.read_bytes()
    run_records = tmp_path / "run" / "libri.records.jsonl.gz"
    assert run_records.read_bytes() == reference.records_path.read_bytes()
    assert len(read_records(run_records)) == 10
    assert sorted(os.listdir(tmp_path / "run")) == [
        "libri.cuts.jsonl.gz",
        "libri.job.json",
        "libri.records.jsonl.gz",
    ]


def test_bad_input_cuts_are_reported_with_file_line_and_field(tmp_path):
    need("lhotse")
    from lhotse.testing.dummies import dummy_cut, dummy_supervision

    from nemo_neko.asr.cutio import write_cuts
    from nemo_neko.asr.generate import GenerateConfig, generate_nbest

    good = dummy_cut(0, supervisions=[dummy_supervision(0, text="a")])
    two = dummy_cut(
        1, supervisions=[dummy_supervision(1, text="a"), dummy_supervision(2, text="b")]
    )
    path = tmp_path / "in.jsonl.gz"
    write_cuts(path, [good, two])
    config = GenerateConfig(str(path), str(tmp_path / "o"), "x", "x", backend="pocketsphinx")
    with pytest.raises(
        RecordError, match=r"in.jsonl.gz:2: field 'supervisions': cut .* 2 supervisions"
    ):
        generate_nbest(config)
    write_cuts(path, [good, good])
    with pytest.raises(RecordError, match=r"in.jsonl.gz:2: field 'id': duplicate cut id"):
        generate_nbest(config)
    with pytest.raises(ValueError, match="unknown backend 'whisper'"):
        generate_nbest(GenerateConfig(str(path), str(tmp_path), "x", "x", backend="whisper"))
    assert not (tmp_path / "o").exists()  # nothing started
