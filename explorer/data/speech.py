"""Synthetic speech with exact word times: eSpeak NG through its C library, resampled to 16 kHz, plus Whisper's features.

eSpeak NG comes from the PyPI wheel ``espeakng-loader`` (its ``libespeak-ng.so`` 1.52 and ``espeak-ng-data``
inside the package; installed by ``make setup`` with the rest of the environment, pinned in ``constraints.txt``).
A wheel rather than Debian's ``libespeak-ng1``: it needs no root and no apt, it is pinned with every other
dependency, and the same version lands on every machine and operating system. When the wheel is missing, Debian's
``libespeak-ng.so.1`` (with its default data folder) is used if present.

The library runs in a small worker process (``_espeak_worker.py``) that forks a fresh copy of the initialised library
for every utterance and seeds its ``rand()``: eSpeak keeps state between utterances (pitch flutter, noise), so
in-process synthesis of the same text differs run to run by a few samples; through the worker the same request
always gives the same samples. The worker drives the library through ``ctypes`` with phoneme events on
(``espeakINITIALIZE_PHONEME_EVENTS``). Every event
carries its position in the output as a sample index at 22 050 Hz (``espeak_EVENT.sample``). A *word* event marks
the start of the pause before the word, not the word, so a word's span is taken from its first phoneme event to the
next phoneme event after its last phoneme (the next word's first phoneme, a pause, or the end). eSpeak sometimes
speaks two words as one (``"on the"``): those words share one word event and cannot be timed separately, so
:func:`synthesize` raises for them and :func:`make_utterances` draws sentences from :data:`WORDS`, a vocabulary
checked to be timed word by word (``tests/data/test_speech.py``).

Audio is resampled 22 050 -> 16 000 Hz with a polyphase filter (``scipy.signal.resample_poly``, 320/441); word times
are converted exactly (seconds do not change). :func:`log_mel` computes Whisper's log-mel spectrogram: 80 bands,
400-sample (25 ms) Hann window, 160-sample (10 ms) hop, centred STFT with reflect padding, power spectrum, the
last frame dropped (as in ``whisper/audio.py``), ``log10`` of ``max(mel, 1e-10)``, clamped to ``max - 8``, then
``(x + 4) / 4``. The mel filters are ``transformers.audio_utils.mel_filter_bank`` (Slaney scale and norm, the same
filters as ``librosa.filters.mel`` that Whisper ships), saved in ``assets/speech/mel_filters.npz`` so that the
library needs no ``transformers`` at run time; the tests recompute them and compare the features with
``transformers.WhisperFeatureExtractor``.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from explorer._checks import check_int, check_real, check_type

__all__ = [
    "SAMPLE_RATE", "ESPEAK_RATE", "HOP_SECONDS", "N_MELS", "N_FFT", "HOP_LENGTH", "WORDS", "ACCENTS",
    "TRAIN_VARIANTS", "VALIDATION_VARIANTS", "TEST_VARIANTS", "Utterance", "EspeakMissing", "espeak_available",
    "espeak_version", "synthesize", "make_utterances", "random_sentence", "log_mel", "mel_filters", "voices",
    "MEL_FILTERS_FILE", "INSTALL_HINT",
]

SAMPLE_RATE = 16_000        # Hz, the model's audio rate (Whisper's)
ESPEAK_RATE = 22_050        # Hz, eSpeak NG's output rate
N_FFT = 400                 # samples, 25 ms window
HOP_LENGTH = 160            # samples, 10 ms hop
HOP_SECONDS = HOP_LENGTH / SAMPLE_RATE
N_MELS = 80
MEL_FILTERS_FILE = Path(__file__).resolve().parents[2] / "assets" / "speech" / "mel_filters.npz"
INSTALL_HINT = ("eSpeak NG is not installed: run `make setup` (it installs the PyPI wheel espeakng-loader), or "
                "`pip install espeakng-loader`, or on Debian/Ubuntu `sudo apt-get install libespeak-ng1`.")

# Accents (eSpeak language voices) x variants (eSpeak's voice variants: timbre, pitch range, breathiness).
# The variants are split: the model trains on TRAIN_VARIANTS, heads are chosen on VALIDATION_VARIANTS and every
# reported number is on TEST_VARIANTS, voices it never heard.
ACCENTS = ("en-us", "en-gb-x-rp", "en-029")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3")
VALIDATION_VARIANTS = ("m5", "f5")
TEST_VARIANTS = ("m7", "f4")

# Content words that eSpeak NG times one by one (no word merges with a neighbour); lower case a-z only.
WORDS = tuple("""
apple river green seven music window garden yellow paper silver orange candle forest rabbit pencil
little button dragon mountain planet rocket summer winter yellow basket castle doctor engine farmer
guitar hammer island jacket kitchen lemon market number office pepper rainbow shadow tiger violin
wagon zebra bottle camera dinner finger hollow jungle kettle ladder monkey nature ocean pillow puzzle
quiet rubber sister table under valley water yogurt cotton bridge cloud dream flower giant horse
light magic night plant queen sugar train voice whale young brave clever early funny gentle happy
jolly kind lucky noisy proud rapid shiny sleepy tiny warm blue brown purple black white orange
three four five eight nine twelve twenty hundred sing jump write paint climb swim build carry
follow listen open read sleep travel wander whisper answer borrow choose divide explain gather
juggle measure notice remember shout smile count bake cook draw
""".split())
WORDS = tuple(dict.fromkeys(WORDS))  # unique, order kept

_RATE_RANGE = (80, 450)     # words per minute accepted by eSpeak NG
_PITCH_RANGE = (0, 99)
_EVENT_WORD, _EVENT_PHONEME = 1, 7  # espeak_EVENT_TYPE (speak_lib.h)
_WORKER = Path(__file__).with_name("_espeak_worker.py")


class EspeakMissing(RuntimeError):
    """eSpeak NG's library could not be loaded; the message says how to install it."""


class _Espeak:
    """Client of the eSpeak NG worker process (``_espeak_worker.py``: one fresh fork of the library per utterance,
    so the same request always gives the same samples). One lock serialises requests; a dead worker is restarted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        atexit.register(self.close)
        self.version = self._start()

    def _start(self) -> str:
        self.process = subprocess.Popen([sys.executable, "-I", str(_WORKER)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        hello = self._header()
        if hello is None or not hello.get("ok"):
            self.close()
            raise EspeakMissing(INSTALL_HINT + ("" if hello is None else f" ({hello.get('error')})"))
        return hello["version"]

    def _header(self) -> dict | None:
        line = self.process.stdout.readline()
        return json.loads(line) if line else None

    def close(self) -> None:
        """Stop the worker (it exits when its stdin closes) and close both pipes."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def speak(self, text: str, voice: str, rate: int, pitch: int, seed: int = 0) -> tuple[np.ndarray, list]:
        request = json.dumps({"text": text, "voice": voice, "rate": rate, "pitch": pitch, "seed": seed}).encode()
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self.close()
                self.version = self._start()
            try:
                self.process.stdin.write(request + b"\n")
                self.process.stdin.flush()
                answer = self._header()
            except (BrokenPipeError, OSError) as error:
                raise RuntimeError(f"the eSpeak NG worker stopped ({error}); try again") from error
            if answer is None:
                raise RuntimeError("the eSpeak NG worker stopped without answering; try again")
            if not answer["ok"]:
                if answer["error"] == "voice":
                    raise ValueError(f"voice must be an eSpeak NG voice such as 'en-us+m3', got {voice!r}")
                raise RuntimeError(f"eSpeak NG could not synthesise {text!r}: {answer['error']}")
            raw = self.process.stdout.read(2 * answer["samples"])
        if answer["status"] != 0:
            raise RuntimeError(f"eSpeak NG could not synthesise {text!r} (espeak_Synth returned {answer['status']})")
        events = [(kind, t_pos, sample, name.encode("latin-1")) for kind, t_pos, sample, name in answer["events"]]
        return np.frombuffer(raw, dtype="<i2").copy(), events


_ENGINE: _Espeak | None = None


def _engine() -> _Espeak:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    return _ENGINE


def espeak_available() -> bool:
    """True when eSpeak NG's library loads (without raising)."""
    try:
        _engine()
    except EspeakMissing:
        return False
    return True


def espeak_version() -> str:
    """eSpeak NG's version string (``"1.52.0"`` from the wheel). Raises :class:`EspeakMissing` when absent."""
    return _engine().version


def voices(split: str) -> tuple[str, ...]:
    """The eSpeak voice names (``"accent+variant"``) of ``split``: ``"train"``, ``"validation"`` or ``"test"``."""
    variants = {"train": TRAIN_VARIANTS, "validation": VALIDATION_VARIANTS, "test": TEST_VARIANTS}
    if split not in variants:
        raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}")
    return tuple(f"{a}+{v}" for a in ACCENTS for v in variants[split])


@dataclass
class Utterance:
    """One synthesised sentence: 16 kHz audio and the true span of every word.

    ``starts``/``ends`` are seconds from the start of ``audio``; ``words[i]`` spans ``[starts[i], ends[i])``.
    """

    text: str
    words: list[str]
    audio: np.ndarray             # (sample,) float32 in [-1, 1], 16 kHz
    starts: np.ndarray            # (word,) float64 seconds
    ends: np.ndarray              # (word,) float64 seconds
    voice: str = ""
    rate: int = 175
    pitch: int = 50
    snr_db: float | None = None
    phonemes: list[tuple[str, float]] = field(default_factory=list)  # (eSpeak phoneme mnemonic, start seconds)

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / SAMPLE_RATE


def _word_spans(text: str, events: list) -> tuple[list[str], np.ndarray, np.ndarray, list[tuple[str, float]]]:
    """Word spans in eSpeak samples from the event list (see the module docstring for the rule)."""
    words = text.split()
    # character offset (1-based, as eSpeak reports) of each word's first letter
    offsets, pos = [], 0
    for w in words:
        pos = text.index(w, pos)
        offsets.append(pos + 1)
        pos += len(w)
    phonemes = [(t_pos, sample, name) for kind, t_pos, sample, name in events if kind == _EVENT_PHONEME]
    word_events = [t_pos for kind, t_pos, _, _ in events if kind == _EVENT_WORD]
    if word_events != offsets:
        raise ValueError(f"text: eSpeak NG did not time every word of {text!r} separately (word events at "
                         f"characters {word_events}, words at {offsets}); use words from explorer.data.speech.WORDS")
    starts, ends = [], []
    for w, off in enumerate(offsets):
        own = [i for i, (t_pos, _, name) in enumerate(phonemes) if t_pos == off and not name.startswith(b"_")]
        if not own:
            raise ValueError(f"text: eSpeak NG gave no phoneme for the word {words[w]!r} in {text!r}")
        first, last = own[0], own[-1]
        if last + 1 >= len(phonemes):
            raise ValueError(f"text: eSpeak NG gave no phoneme after the word {words[w]!r} in {text!r}")
        starts.append(phonemes[first][1])
        ends.append(phonemes[last + 1][1])
    names = [(name.decode(errors="replace"), sample / ESPEAK_RATE) for _, sample, name in phonemes]
    return words, np.asarray(starts, np.float64) / ESPEAK_RATE, np.asarray(ends, np.float64) / ESPEAK_RATE, names


def _normalise_text(text: object) -> str:
    check_type("text", text, str, "a str")
    words = text.lower().split()
    if not words:
        raise ValueError("text must contain at least one word, got an empty string")
    return " ".join(words)


def synthesize(text: str, voice: str = "en-us+m3", rate: int = 175, pitch: int = 50, snr_db: float | None = None,
               seed: int = 0) -> Utterance:
    """Speak ``text`` with eSpeak NG and return 16 kHz audio with every word's true span.

    Args:
        text: words separated by spaces, letters a-z only (upper case is lowered); every word must be timed
            separately by eSpeak (true for :data:`WORDS`; merged words raise a ValueError).
        voice: an eSpeak NG voice name, ``"accent+variant"`` such as ``"en-us+m3"`` (:func:`voices`).
        rate: speaking rate in words per minute, 80..450.
        pitch: base pitch, 0..99 (eSpeak's scale; 50 is the voice's default).
        snr_db: add white Gaussian noise at this signal-to-noise ratio (dB, over the whole clip), or None.
        seed: seed of the noise.

    Returns:
        An :class:`Utterance`.

    Raises:
        EspeakMissing: eSpeak NG's library is not installed (the message says how to install it).
        TypeError / ValueError: a bad argument, named.
    """
    text = _normalise_text(text)
    bad = sorted({c for c in text if not ("a" <= c <= "z" or c == " ")})
    if bad:
        raise ValueError(f"text may contain only letters a-z and spaces, got {''.join(bad)!r}")
    check_type("voice", voice, str, "an eSpeak voice name such as 'en-us+m3'")
    rate = check_int("rate", rate, *_RATE_RANGE)
    pitch = check_int("pitch", pitch, *_PITCH_RANGE)
    if snr_db is not None:
        snr_db = check_real("snr_db", snr_db, -20, 100, finite=True)
    seed = check_int("seed", seed, 0)
    raw, events = _engine().speak(text, voice, rate, pitch, seed)
    words, starts, ends, phonemes = _word_spans(text, events)
    from scipy.signal import resample_poly
    audio = resample_poly(raw.astype(np.float64) / 32768.0, 320, 441)  # 22050 -> 16000 Hz
    if snr_db is not None:
        rng = np.random.default_rng(seed)
        power = float(np.mean(audio ** 2)) or 1e-12
        audio = audio + rng.standard_normal(len(audio)) * np.sqrt(power / 10 ** (snr_db / 10))
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    return Utterance(text, words, audio, starts, ends, voice, rate, pitch, snr_db, phonemes)


def random_sentence(rng: np.random.Generator, min_words: int = 3, max_words: int = 8) -> str:
    """A sentence of ``min_words..max_words`` words drawn from :data:`WORDS` with ``rng``."""
    n = int(rng.integers(min_words, max_words + 1))
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


def make_utterances(n: int, split: str = "train", seed: int = 0, min_words: int = 3, max_words: int = 8,
                    rate: tuple[int, int] = (140, 210), pitch: tuple[int, int] = (30, 70),
                    snr_db: tuple[float, float] = (20.0, 40.0)) -> list[Utterance]:
    """``n`` random utterances of ``split``'s voices, reproducible from ``seed``.

    Utterance ``i`` uses voice ``voices(split)[i % len]`` (every voice equally often), a sentence from
    :func:`random_sentence`, a rate, pitch and noise level drawn uniformly from the given ranges.
    """
    n = check_int("n", n, 1, 1_000_000)
    names = voices(split)
    rng = np.random.default_rng([check_int("seed", seed, 0), {"train": 0, "validation": 1, "test": 2}[split]])
    out = []
    for i in range(n):
        text = random_sentence(rng, min_words, max_words)
        out.append(synthesize(text, names[i % len(names)], int(rng.integers(rate[0], rate[1] + 1)),
                              int(rng.integers(pitch[0], pitch[1] + 1)), float(rng.uniform(*snr_db)),
                              int(rng.integers(0, 2**31))))
    return out


_MEL: torch.Tensor | None = None


def mel_filters() -> torch.Tensor:
    """Whisper's mel filter bank ``[80, 201]`` (float32), from ``assets/speech/mel_filters.npz``."""
    global _MEL
    if _MEL is None:
        if not MEL_FILTERS_FILE.is_file():
            raise FileNotFoundError(f"{MEL_FILTERS_FILE} is missing; regenerate it with "
                                    "`python -m explorer.train.speech --mel-filters-only`")
        with np.load(MEL_FILTERS_FILE) as f:
            _MEL = torch.from_numpy(f["mel_80"].astype(np.float32))
    return _MEL


def log_mel(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel spectrogram of 16 kHz audio.

    Args:
        audio: ``[sample]`` or ``[batch, sample]`` float waveform at 16 kHz (at least 201 samples).

    Returns:
        ``[80, frame]`` (or ``[batch, 80, frame]``) float32 with ``frame = sample // 160``; each item is clamped to
        its own maximum minus 8 (log10 units) and scaled by ``(x + 4) / 4``.
    """
    x = torch.as_tensor(audio)
    if not torch.is_floating_point(x):
        raise TypeError(f"audio must be a float waveform, got dtype {x.dtype}")
    if x.ndim not in (1, 2) or x.shape[-1] < N_FFT // 2 + 1:
        raise ValueError(f"audio must be [sample] or [batch, sample] with at least {N_FFT // 2 + 1} samples, "
                         f"got shape {tuple(x.shape)}")
    x = x.to(torch.float32)
    window = torch.hann_window(N_FFT)
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, return_complex=True)  # (..., freq, frame + 1)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters() @ power  # (..., 80, frame)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0
