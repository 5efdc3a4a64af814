"""N-best generation speed on CPU: utterances/s and RTFx of both backends on synthesised speech.

Synthesises ``--utterances`` sentences with espeak-ng (16 kHz), plans duration-sorted batches as
the generation job does, and times ``backend.recognize`` over all of them, ``--repeats`` times
after one warm-up pass; reports the medians. Backends:

* ``pocketsphinx``: its bundled English model, lattice N-best (5 per utterance);
* ``canary-beam``, ``canary-sample``: the tiny random-weight Canary (NeMo ``EncDecMultiTaskModel``
  built here, saved to ``.nemo`` and restored) through ``transcribe()``: beam search of 5, and 5
  temperature samples at 0.3 (our multi-sample fix). Its decoder runs to the length limit on
  every utterance (random weights rarely emit end-of-sequence), so these figures are a
  worst-case for the architecture's decoding loop at this size, not Canary-1B's speed.

Run::

    python benchmarks/nbest_generation.py
    python benchmarks/nbest_generation.py --utterances 48 --repeats 5 --threads 1 --json out.json
    python benchmarks/nbest_generation.py --backends pocketsphinx
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

BACKENDS = ("pocketsphinx", "canary-beam", "canary-sample")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--utterances", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8, help="canary batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (canary)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def _time(backend, audio, batches, repeats) -> list[float]:
    def one_pass() -> float:
        start = time.perf_counter()
        for j, batch in enumerate(batches):
            backend.recognize([audio[i] for i in batch], seed=j)
        return time.perf_counter() - start

    one_pass()  # warm-up
    return [one_pass() for _ in range(repeats)]


def main(argv=None) -> dict:
    args = parse_args(argv)
    from nemo_neko.asr.backends import build_backend
    from nemo_neko.asr.sharding import plan_batches
    from nemo_neko.asr.synth import SENTENCES, VOICES, synthesize

    texts = [SENTENCES[i % len(SENTENCES)] for i in range(args.utterances)]
    audio = [synthesize(t, voice=VOICES[i % len(VOICES)]) for i, t in enumerate(texts)]
    seconds = sum(len(a) for a in audio) / 16000
    index = {str(i): i for i in range(len(audio))}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as work:
        model = f"{work}/tiny_canary.nemo"
        if any(name.startswith("canary") for name in args.backends):
            from nemo_neko.asr.tiny_canary import save_tiny_canary

            save_tiny_canary(model)
        for name in args.backends:
            if name == "pocketsphinx":
                backend = build_backend("pocketsphinx", {"n": 5})
                batch_size = 1
            else:
                method = "beam" if name == "canary-beam" else "sample"
                backend = build_backend(
                    "canary",
                    {
                        "model": model,
                        "method": method,
                        "n": 5,
                        "temperature": 0.3,
                        "device": "cpu",
                        "threads": args.threads,
                    },
                )
                batch_size = args.batch_size
            lengths = [(str(i), len(a) / 16000) for i, a in enumerate(audio)]
            batches = [[index[c] for c in b] for b in plan_batches(lengths, batch_size)]
            walls = _time(backend, audio, batches, args.repeats)
            wall = statistics.median(walls)
            results[backend.method] = {
                "utterances_per_second": round(len(audio) / wall, 3),
                "rtfx": round(seconds / wall, 3),
                "median_seconds": round(wall, 3),
                "repeats_seconds": [round(w, 3) for w in walls],
                "batch_size": batch_size,
            }
            print(
                f"{backend.method:24s} {len(audio) / wall:8.2f} utt/s  RTFx {seconds / wall:7.2f}"
                f"  (median of {args.repeats}: {wall:.2f} s)"
            )
    import torch

    out = {
        "utterances": len(audio),
        "audio_seconds": round(seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
