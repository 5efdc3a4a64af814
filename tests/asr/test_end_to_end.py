"""The whole CPU data path, nothing downloaded: espeak-ng audio in LibriSpeech's layout ->
lhotse's prepare_librispeech -> PocketSphinx N-best lists (the data_prep CLI) -> correction
records -> packed, batched training sequences of the mixture."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from nemo_neko.data.records import read_records
from tests.asr._tools import need

REPO = Path(__file__).resolve().parents[2]


def test_audio_to_nbest_to_records_to_packed_batches(manifests, tmp_path):
    need("pocketsphinx")
    from nemo_neko.data.importers.lhotse_cuts import import_lhotse_cuts
    from nemo_neko.data.mixture import BatchSchedule, DatasetSpec, MixtureConfig, PackedMixture
    from nemo_neko.data.tokenizer import train_bpe_tokenizer
    from nemo_neko.tasks import get_task

    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "data_prep" / "generate_nbest.py"),
            "run",
            str(manifests["test-clean"]),
            "--out-dir",
            str(tmp_path),
            "--name",
            "ls_test",
            "--dataset",
            "librispeech",
            "--backend",
            "pocketsphinx",
            "--n",
            "5",
            "--duplicates",
            "unique_pad",
            "--batch-size",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        summary["utterances"] == 2 and summary["utterances_per_second"] > 0 and summary["rtfx"] > 0
    )
    assert "utt/s" in out.stderr and "RTFx" in out.stderr

    records = read_records(summary["records"])
    assert records == list(import_lhotse_cuts(summary["cuts"], dataset="librispeech"))
    assert len(records) == 2 and all(len(r.hypotheses) == 5 for r in records)
    assert all(r.reference.islower() and r.hypotheses[0] for r in records)

    task = get_task("asr")
    texts = [task.prompt(r) + "\n" + task.target(r) for r in records]
    tokenizer = train_bpe_tokenizer(texts * 20, vocab_size=400, min_frequency=1)
    config = MixtureConfig(
        datasets=[DatasetSpec("librispeech", [summary["records"]])], epochs=2, seq_length=512
    )
    mixture = PackedMixture.build(config, tokenizer)
    assert len(mixture) >= 1 and 0 < mixture.efficiency() <= 1
    schedule = BatchSchedule(mixture, global_batch_size=1, micro_batch_size=1)
    (batch,) = next(iter(schedule))
    tokens = batch["input_ids"]
    assert tokens.shape == (1, 512) and tokens.dtype.kind == "i"
    assert set(np.unique(batch["task_ids"][batch["segment_ids"] >= 0])) <= {0}
    decoded = tokenizer.decode(tokens[0].tolist())
    assert any(r.hypotheses[0] in decoded and r.reference in decoded for r in records)
