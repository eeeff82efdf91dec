"""Speech for the synthetic talking-face clips: espeak-ng when installed, else a formant voice.

Part of the synthetic training data (``talkinghead data synth``, see ``synth.py``). Two sources:

* ``espeak_speech``: random sentences from a small built-in word list, spoken by the ``espeak-ng``
  command line (Debian package ``espeak-ng``) with a seeded voice variant, rate and pitch, resampled
  from its 22.05 kHz to 16 kHz.
* ``formant_speech``: a weight-free synthetic voice. A glottal pulse train (sawtooth-like source with
  a slowly drifting, declining pitch) goes through three cascaded formant resonators whose
  frequencies are those of a vowel chosen per syllable; syllables (~4-6 per second) get an
  attack/decay envelope and sometimes a noise burst (a consonant), words are separated by short
  gaps and sentences by longer pauses.

Both are deterministic given the ``numpy.random.Generator`` they receive. The mouth of the drawn face
follows the loudness envelope of the *actual* waveform (``loudness_envelope``), whichever voice
produced it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import butter, lfilter, resample_poly, sosfilt

__all__ = [
    "SAMPLE_RATE",
    "WORDS",
    "espeak_available",
    "espeak_speech",
    "formant_speech",
    "loudness_envelope",
    "random_sentence",
    "synthesize_speech",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz; the rate of every audio file in the training layout
PEAK = 0.7  # peak amplitude the speech is normalised to (full scale = 1)

WORDS = [
    "the",
    "a",
    "one",
    "two",
    "three",
    "red",
    "blue",
    "green",
    "small",
    "big",
    "old",
    "new",
    "good",
    "fast",
    "slow",
    "warm",
    "cold",
    "bright",
    "dark",
    "house",
    "river",
    "garden",
    "window",
    "table",
    "paper",
    "music",
    "morning",
    "evening",
    "water",
    "stone",
    "light",
    "city",
    "road",
    "friend",
    "teacher",
    "mother",
    "father",
    "child",
    "story",
    "letter",
    "picture",
    "summer",
    "winter",
    "forest",
    "mountain",
    "walks",
    "reads",
    "sings",
    "opens",
    "finds",
    "brings",
    "makes",
    "takes",
    "likes",
    "sees",
    "hears",
    "builds",
    "carries",
    "follows",
    "quickly",
    "softly",
    "today",
    "again",
    "always",
    "never",
    "often",
    "together",
    "outside",
    "under",
    "over",
    "near",
    "behind",
    "and",
    "but",
    "then",
    "because",
    "while",
    "after",
    "before",
    "with",
    "without",
    "from",
    "into",
    "about",
]

# (F1, F2, F3) in Hz of a few vowels (adult averages), for the formant voice
_VOWELS = np.array(
    [
        (730, 1090, 2440),  # a
        (530, 1840, 2480),  # e
        (270, 2290, 3010),  # i
        (570, 840, 2410),  # o
        (300, 870, 2240),  # u
        (660, 1720, 2410),  # ae
        (520, 1190, 2390),  # schwa
    ],
    dtype=np.float64,
)
_BANDWIDTHS = np.array([80.0, 110.0, 160.0])  # Hz, formant bandwidths


def espeak_available() -> bool:
    """True when the ``espeak-ng`` program is on PATH."""
    return shutil.which("espeak-ng") is not None


def random_sentence(rng: np.random.Generator, min_words: int = 4, max_words: int = 9) -> str:
    """A random sentence of ``min_words..max_words`` words from ``WORDS``."""
    count = int(rng.integers(min_words, max_words + 1))
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=count))


def _espeak_wav(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """One utterance by espeak-ng -> (N,) float32 at 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="talkinghead-espeak-") as tmp:
        path = Path(tmp) / "speech.wav"
        cmd = [exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(path), text]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        sr, data = wavfile.read(path)
    audio = data.astype(np.float32) / 32768.0 if data.dtype == np.int16 else data.astype(np.float32)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        from math import gcd

        g = gcd(SAMPLE_RATE, sr)
        audio = resample_poly(audio, SAMPLE_RATE // g, sr // g).astype(np.float32)
    return audio


def espeak_speech(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Random sentences by espeak-ng, joined with pauses, cut/padded to ``seconds``.

    Returns:
        (round(seconds * 16000),) float32, peak ``PEAK``.
    """
    total = round(seconds * SAMPLE_RATE)
    variant = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")[int(rng.integers(0, 8))]
    voice = f"en+{variant}"
    rate = int(rng.integers(140, 186))  # words per minute
    pitch = int(rng.integers(30, 71))  # espeak's 0..99 pitch scale
    pieces = [np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE), np.float32)]
    length = pieces[0].shape[0]
    while length < total:
        speech = _espeak_wav(random_sentence(rng), voice, rate, pitch)
        pause = np.zeros(int(rng.uniform(0.25, 0.7) * SAMPLE_RATE), np.float32)
        pieces += [speech, pause]
        length += speech.shape[0] + pause.shape[0]
    return _finish(np.concatenate(pieces)[:total], rng)


def _resonator(freq: float, bandwidth: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-pole resonator (Klatt) with unit gain at DC: ``(b, a)`` for ``lfilter``."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    a = np.array([1.0, -2.0 * r * np.cos(2.0 * np.pi * freq / SAMPLE_RATE), r * r])
    return np.array([a.sum()]), a


def _syllable(n: int, f0: np.ndarray, vowel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One voiced syllable of ``n`` samples with pitch track ``f0`` (n,) and formants ``vowel`` (3,)."""
    phase = np.cumsum(f0 / SAMPLE_RATE)
    source = 1.0 - 2.0 * (phase % 1.0)  # falling sawtooth: harmonics ~ 1/k like a glottal flow
    source += 0.05 * rng.standard_normal(n)  # breathiness
    out = source
    for freq, bw in zip(vowel * rng.uniform(0.93, 1.07, 3), _BANDWIDTHS):
        b, a = _resonator(float(freq), float(bw))
        out = lfilter(b, a, out)
    t = np.linspace(0.0, 1.0, n)
    attack = float(rng.uniform(0.1, 0.3))
    envelope = np.minimum(t / attack, 1.0) * np.minimum((1.0 - t) / 0.35, 1.0) ** 1.5
    out = out * envelope * rng.uniform(0.5, 1.0)
    if rng.random() < 0.6:  # consonant: a short band-passed noise burst at the onset
        burst = min(n, int(rng.uniform(0.02, 0.07) * SAMPLE_RATE))
        low = float(rng.uniform(1500, 3500))
        sos = butter(2, [low, min(low * 2.2, 7500.0)], btype="band", fs=SAMPLE_RATE, output="sos")
        noise = sosfilt(sos, rng.standard_normal(burst)) * np.hanning(burst)
        out[:burst] += (
            noise * rng.uniform(0.3, 1.0) * np.abs(out).max() / max(np.abs(noise).max(), 1e-9)
        )
    return out


def formant_speech(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Built-in synthetic voice: words of 1-3 vowel-like syllables, pauses between sentences.

    Returns:
        (round(seconds * 16000),) float32, peak ``PEAK``.
    """
    total = round(seconds * SAMPLE_RATE)
    base_f0 = float(rng.uniform(95, 230))  # Hz; speaker pitch
    audio = np.zeros(total, np.float64)
    pos = int(rng.uniform(0.1, 0.4) * SAMPLE_RATE)
    words_left = int(rng.integers(3, 9))
    while pos < total:
        for _ in range(int(rng.integers(1, 4))):  # syllables of one word
            n = int(rng.uniform(0.12, 0.26) * SAMPLE_RATE)
            if pos + n > total:
                break
            start_f0 = base_f0 * rng.uniform(0.85, 1.2)
            f0 = np.linspace(start_f0, start_f0 * rng.uniform(0.85, 1.05), n)  # declination
            vowel = _VOWELS[int(rng.integers(0, len(_VOWELS)))]
            audio[pos : pos + n] += _syllable(n, f0, vowel, rng)
            pos += n + int(rng.uniform(0.0, 0.04) * SAMPLE_RATE)
        words_left -= 1
        if words_left > 0:
            pos += int(rng.uniform(0.04, 0.15) * SAMPLE_RATE)  # gap between words
        else:
            pos += int(rng.uniform(0.3, 0.8) * SAMPLE_RATE)  # pause between sentences
            words_left = int(rng.integers(3, 9))
    return _finish(audio, rng)


def _finish(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Normalise to ``PEAK`` and add a faint noise floor (so no stretch is digitally silent)."""
    peak = float(np.abs(audio).max())
    if peak > 0:
        audio = audio * (PEAK / peak)
    audio = audio + 3e-4 * rng.standard_normal(audio.shape[0])
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def synthesize_speech(
    seconds: float, rng: np.random.Generator, voice: str = "auto"
) -> tuple[np.ndarray, str]:
    """Speech of exactly ``seconds`` at 16 kHz.

    Args:
        seconds: duration (> 0).
        rng: source of all randomness (sentences, speaker, prosody).
        voice: ``"espeak"`` (requires espeak-ng), ``"formant"`` (built-in) or ``"auto"``
            (espeak-ng when installed, else the built-in voice).

    Returns:
        audio: (round(seconds * 16000),) float32 in [-1, 1];
        name: the voice used, ``"espeak-ng"`` or ``"formant"``.
    """
    if seconds <= 0:
        raise ValueError(f"seconds={seconds} must be positive")
    if voice not in ("auto", "espeak", "formant"):
        raise ValueError(f"voice={voice!r} must be 'auto', 'espeak' or 'formant'")
    if voice == "espeak" or (voice == "auto" and espeak_available()):
        return espeak_speech(seconds, rng), "espeak-ng"
    return formant_speech(seconds, rng), "formant"


def loudness_envelope(
    audio: np.ndarray, num_frames: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """RMS of the waveform over each video frame's own 40 ms (at 25 fps) of audio.

    Args:
        audio: (N,) mono samples.
        num_frames: F video frames; frame ``i`` covers ``[i / fps, (i + 1) / fps)``.

    Returns:
        (F,) float64 RMS per frame.
    """
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (N,), got shape {audio.shape}")
    hop = sample_rate / fps
    window = round(hop)
    power = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    starts = np.clip(np.round(np.arange(num_frames) * hop).astype(int), 0, audio.shape[0])
    ends = np.clip(starts + window, 0, audio.shape[0])
    energy = (power[ends] - power[starts]) / np.maximum(ends - starts, 1)
    return np.sqrt(energy)
