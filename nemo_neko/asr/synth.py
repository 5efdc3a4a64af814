"""Real speech without downloads: espeak-ng synthesis and a tiny corpus in LibriSpeech's layout.

Used by the tests, the benchmark and the CPU demo. ``espeak-ng`` is a Debian package
(``apt-get install espeak-ng``); it writes 22.05 kHz WAV, resampled here to 16 kHz with soxr
(a dependency of NeMo's ASR collection via librosa; ``pip install soxr`` otherwise).

The default voices (``en-us+klatt``, ``en-us+f2``, ...) are the ones PocketSphinx's bundled
English model recognises best (word error rate about 0.4-0.5 on :data:`SENTENCES`, versus 0.8+
for the default voice).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ESPEAK_HINT = "speech synthesis needs espeak-ng: apt-get install -y espeak-ng"
SAMPLE_RATE = 16000

VOICES = ("en-us+klatt", "en-us+f2", "en-us+klatt2", "en-us+klatt4")
"""espeak-ng voices, one per synthetic speaker."""

SENTENCES = (
    "the weather is nice today",
    "please call stella and ask her to bring these things",
    "i would like to book a flight to boston tomorrow morning",
    "the quick brown fox jumps over the lazy dog",
    "we will meet at the station at seven o'clock",
    "she bought three apples and a loaf of bread",
    "the meeting has been moved to next thursday",
    "can you tell me the way to the library",
    "our company reported strong results this quarter",
    "the children played in the garden all afternoon",
    "turn left at the second traffic light",
    "he reads the newspaper every morning",
    "the train to chicago leaves at noon",
    "revenue grew by ten percent compared to last year",
    "my sister lives in a small house near the river",
    "the museum is closed on mondays",
    "please send me the report before friday",
    "a cup of hot tea helps on a cold day",
    "the river flows slowly through the valley",
    "they painted the kitchen a bright yellow",
    "the doctor will see you in a few minutes",
    "we need more chairs for the conference room",
    "the dog barked at the mail carrier",
    "thank you all for joining the call today",
    "the price of gold rose sharply this week",
    "i left my keys on the kitchen table",
    "the students finished their exams in june",
    "let us review the numbers one more time",
    "the airport was busy during the holidays",
    "music filled the hall as the concert began",
    "the store opens at nine in the morning",
    "we expect margins to improve next year",
)
"""Short, clear English sentences (written for this project)."""


def have_espeak() -> bool:
    """Whether the ``espeak-ng`` program is on PATH."""
    return shutil.which("espeak-ng") is not None


def synthesize(
    text: str, voice: str = VOICES[0], speed: int = 140, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Speak ``text`` with espeak-ng: ``[samples]`` float32 mono at ``sample_rate``.

    Raises:
        FileNotFoundError: espeak-ng is not installed (with the install hint).
        RuntimeError: espeak-ng failed (its message included).
    """
    import soundfile as sf

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError(ESPEAK_HINT)
    proc = subprocess.run(
        [exe, "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=False
    )
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed on {text!r}: {proc.stderr.decode(errors='replace')}")
    audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != sample_rate:
        try:
            import soxr
        except ImportError as err:
            raise ImportError("resampling needs soxr: pip install soxr") from err
        audio = soxr.resample(audio, rate, sample_rate).astype(np.float32)
    return audio


def write_librispeech_corpus(
    root: str | Path,
    parts: dict[str, int],
    *,
    sentences: Sequence[str] = SENTENCES,
    speakers: int = 2,
    voices: Sequence[str] = VOICES,
) -> Path:
    """Synthesise a tiny corpus laid out exactly like LibriSpeech (what ``prepare_librispeech``
    reads): ``root/LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` plus
    one ``<speaker>-<chapter>.trans.txt`` per chapter (``<utt id> <UPPER CASE TEXT>`` lines).

    Args:
        root: output folder.
        parts: part name -> utterances (e.g. ``{"train-clean-100": 12, "test-clean": 4}``).
        sentences: texts, used in order (cycling), continuing across parts.
        speakers: speakers per part (voice ``k`` speaks for speaker ``k``).
        voices: espeak-ng voices.

    Returns:
        The ``LibriSpeech`` folder (the ``corpus_dir`` of ``prepare_librispeech``).
    """
    import soundfile as sf

    corpus = Path(root) / "LibriSpeech"
    k = 0
    for p, (part, count) in enumerate(sorted(parts.items())):
        transcripts: dict[Path, list[str]] = {}
        for u in range(count):
            spk = 100 * (p + 1) + u % speakers
            chapter = 1000 * (p + 1) + u % speakers
            folder = corpus / part / str(spk) / str(chapter)
            folder.mkdir(parents=True, exist_ok=True)
            utt_id = f"{spk}-{chapter}-{u:04d}"
            text = sentences[k % len(sentences)]
            k += 1
            audio = synthesize(text, voice=voices[(spk % 100) % len(voices)])
            sf.write(folder / f"{utt_id}.flac", audio, SAMPLE_RATE)
            transcripts.setdefault(folder / f"{spk}-{chapter}.trans.txt", []).append(
                f"{utt_id} {text.upper()}"
            )
        for path, lines in transcripts.items():
            path.write_text("\n".join(lines) + "\n")
    return corpus
