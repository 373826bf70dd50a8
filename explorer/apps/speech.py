"""Speech: where in the audio does a speech recogniser read each word? Word times from cross-attention.

A tiny Whisper-style model (:mod:`explorer.models.speech`, shipped in ``assets/speech``) turns a log-mel spectrogram
into characters. Its decoder's cross-attention says, for every character it writes, which audio frames it reads;
Whisper's recipe (:func:`explorer.analysis.alignment.align_words`: the alignment heads' attention, standardised,
median-filtered, averaged, then dynamic time warping) turns that into a start and an end time per word. The
sentences come from eSpeak NG (:func:`explorer.data.speech.synthesize`), which also reports where every word truly
is, so the tab shows both, and the error in milliseconds.

:class:`SpeechApp` owns the widgets: example sentences spoken by voices the model never heard, a text box with a
voice and a rate to speak a sentence of one's own, the audio to play, the spectrogram with the true and predicted
word spans (:func:`explorer.viz.speech.spectrogram_figure`), the attention of the chosen heads or of any one head
with the DTW path (:func:`explorer.viz.speech.attention_figure`), and a table of the words' times. A clip longer
than the model's 8 s, or one the memory guard refuses, is refused with a message; so is a sentence the model or
eSpeak cannot take; what was drawn before stays.
"""

from __future__ import annotations

import dataclasses
import html
import io
import wave

import ipywidgets as W
import numpy as np
import torch

from explorer.analysis.alignment import WordAlignment, align_words, utterance_scores
from explorer.apps._callbacks import callback, quietly, single_thread
from explorer.apps._comm_guard import harden
from explorer.apps._layout import WidthWatcher, figure_box, row
from explorer.apps._plot import PlotView
from explorer.data.speech import (HOP_LENGTH, HOP_SECONDS, SAMPLE_RATE, Utterance, log_mel, random_sentence,
                                  synthesize, voices)
from explorer.guard import check
from explorer.models.speech import FRAME_SECONDS, encode_text, encoder_frames, load_speech
from explorer.viz.speech import attention_spec, spectrogram_spec

__all__ = ["SpeechApp", "Example", "EXAMPLES", "alignment_setting", "wav_bytes", "pcm16", "as_heard", "word_errors",
           "RATE_RANGE", "ALIGNMENT", "TYPED"]

RATE_RANGE = (100, 300)  # words per minute offered by the slider (eSpeak takes 80..450)
ALIGNMENT = -1           # the view dropdown's value for the alignment matrix of the chosen heads
TYPED = -1               # the example dropdown's value for the visitor's own sentence


@dataclasses.dataclass(frozen=True)
class Example:
    """A fixed example: a sentence drawn from ``explorer.data.speech.WORDS`` with ``seed``, spoken by ``voice``."""

    seed: int
    voice: str
    rate: int = 175

    @property
    def text(self) -> str:
        return random_sentence(np.random.default_rng([self.seed, 9]), 3, 6)


# held-out voices only: the model never heard them in training
EXAMPLES = tuple(Example(seed, voice) for seed, voice in zip((1, 2, 3, 4), voices("test")))


def alignment_setting() -> dict:
    """How word times are read off the cross-attention: ``{"heads", "filter_width", "space"}`` as chosen on the
    validation voices (``assets/speech/alignment.json``,
    :func:`explorer.analysis.speech_study.chosen_setting`), or Whisper's own setting when that file is missing."""
    from explorer.analysis.speech_study import chosen_setting

    return chosen_setting()


def pcm16(audio: np.ndarray) -> np.ndarray:
    """``audio`` (float in [-1, 1]) as 16-bit PCM samples: ``round(audio * 32768)``, clipped to the int16 range."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768), -32768, 32767).astype(np.int16)


def as_heard(utterance: Utterance) -> Utterance:
    """``utterance`` with its audio rounded to the 16-bit samples of its WAV (``pcm16 / 32768``, float32): the clip
    the model is given is then exactly the one the page plays (the rounding changes a sample by at most 1/65536)."""
    return dataclasses.replace(utterance, audio=(pcm16(utterance.audio) / 32768).astype(np.float32))


def wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """A mono 16-bit PCM WAV file of ``audio`` (float in [-1, 1], :func:`pcm16`) at ``rate`` Hz, for
    ``ipywidgets.Audio``."""
    pcm = pcm16(audio).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return buffer.getvalue()


def word_errors(utterance: Utterance, alignment: WordAlignment) -> tuple[np.ndarray, np.ndarray, float]:
    """``(start errors, end errors, MAE)`` in milliseconds: predicted minus true per word, and the mean absolute
    error over every word's start and end (:func:`explorer.analysis.alignment.utterance_scores`' ``mae_ms``)."""
    start = (np.asarray(alignment.starts, np.float64) - utterance.starts) * 1000
    end = (np.asarray(alignment.ends, np.float64) - utterance.ends) * 1000
    mae = utterance_scores(alignment.starts, alignment.ends, utterance.starts, utterance.ends)["mae_ms"]
    return start, end, mae


def _heads_text(heads: list[tuple[int, int]] | str) -> str:
    return "all heads" if heads == "all" else ", ".join(f"L{l + 1}H{h + 1}" for l, h in heads)


class SpeechApp:
    """Widget app: speak a sentence, read the word times off the model's cross-attention, compare with the truth.

    Args:
        model: a :class:`~explorer.models.speech.TinyWhisper`; None = the shipped one (``load_speech()``).
        card: its model card (a dict; shown under the figures); None with ``model`` given = no card.
        heads: ``[(layer, head)]`` (0-based) or ``"all"``: the heads whose attention gives the word times; None =
            the heads of :func:`alignment_setting` (whose median-filter width and space convention are used in
            any case).
        example: index into :data:`EXAMPLES` shown first.

    State tests read: ``utterance`` (:class:`~explorer.data.speech.Utterance`), ``mel`` (``[80, frame]``),
    ``alignment`` (:class:`~explorer.analysis.alignment.WordAlignment`), ``errors`` (start, end errors in ms and
    the MAE, :func:`word_errors`), ``wav`` (the bytes in ``audio``). Widgets: ``example``, ``view``, ``text``,
    ``voice``, ``rate``, ``speak``, ``audio``, ``table`` (``data-*`` attributes say what is drawn), ``status`` (the
    status line: what was spoken, or an error), figures ``spectrogram`` and ``attention``
    (:class:`~explorer.apps._plot.PlotView`).
    """

    def __init__(self, model=None, card: dict | None = None, heads: list[tuple[int, int]] | str | None = None,
                 example: int = 0) -> None:
        if not isinstance(example, int) or not 0 <= example < len(EXAMPLES):
            raise ValueError(f"example must be an index 0..{len(EXAMPLES) - 1} of EXAMPLES, got {example!r}")
        with single_thread():
            self._build(model, card, heads, example)

    def _build(self, model, card, heads, example: int) -> None:
        if model is None:
            model, card = load_speech()
        self.model, self.card = model.eval(), ({} if card is None else card)
        self.config = model.config
        self.setting = alignment_setting() if heads is None else {**alignment_setting(), "heads": heads}
        self.heads = self.setting["heads"]
        self._busy = False
        self._examples: dict[int, Utterance] = {}
        self._aligned: dict[int, tuple] = {}  # id(example utterance) -> (utterance, mel, alignment): examples only

        style = {"description_width": "80px"}
        self.example = W.Dropdown(options=[(f"{e.text}  ({e.voice})", i) for i, e in enumerate(EXAMPLES)]
                                  + [("your sentence (below)", TYPED)], value=example, description="example",
                                  style=style, layout=W.Layout(width="440px", max_width="100%"))
        views = [(f"alignment: {_heads_text(self.heads)}", ALIGNMENT)] + [
            (f"layer {l + 1} head {h + 1}", l * self.config.heads + h)
            for l in range(self.config.decoder_layers) for h in range(self.config.heads)]
        self.view = W.Dropdown(options=views, value=ALIGNMENT, description="attention", style=style,
                               layout=W.Layout(width="360px", max_width="100%"))
        self.text = W.Text(value=EXAMPLES[example].text, description="sentence", placeholder="words of a-z",
                           continuous_update=False, style=style,
                           layout=W.Layout(flex="1 1 420px", min_width="240px", max_width="600px"))
        test, train = voices("test"), voices("train")
        self.voice = W.Dropdown(options=[(f"{v} (held out)", v) for v in test]
                                + [(f"{v} (training)", v) for v in train[:: max(1, len(train) // 3)][:3]],
                                value=EXAMPLES[example].voice, description="voice", style=style,
                                layout=W.Layout(width="280px"))
        self.rate = W.IntSlider(EXAMPLES[example].rate, *RATE_RANGE, step=5, description="words/min", style=style)
        self.speak = W.Button(description="Speak", button_style="primary", icon="play",
                              layout=W.Layout(width="110px"))
        self.status = W.HTML()
        self.table = W.HTML()
        for widget, name in ((self.example, "sp-example"), (self.view, "sp-view"), (self.text, "sp-text"),
                             (self.voice, "sp-voice"), (self.rate, "sp-rate"), (self.speak, "sp-speak"),
                             (self.status, "sp-status"), (self.table, "sp-words")):
            widget.add_class(name)

        self._apply(*self._compute(self._example_utterance(example)))
        self._shown = example  # the example index (or TYPED) drawn now
        self.wav = wav_bytes(self.utterance.audio)
        self.audio = W.Audio(value=self.wav, format="wav", autoplay=False, loop=False,
                             layout=W.Layout(width="100%", max_width="420px"))
        self.audio.add_class("sp-audio")
        self.spectrogram = PlotView(self._spectrogram_figure(), "sp-spectrogram")
        self.attention = PlotView(self._attention_figure(), "sp-attention")
        self._update_text()

        def on(action):
            def run() -> None:
                with single_thread():
                    action()
            return callback(run, self.status, "sp-error", clear=False)

        self.example.observe(on(self._on_example), names="value")
        self.view.observe(on(self._on_view), names="value")
        self.speak.on_click(on(self._on_speak))

        wer = self.card.get("test", {}).get("wer") if isinstance(self.card.get("test"), dict) else None
        card_text = (f"Model card: word error rate {wer:.1%} on held-out voices. " if isinstance(wer, float) else "")
        self.widget = W.VBox([
            W.HTML("<b>Where does the recogniser hear each word?</b> <small>The decoder writes the sentence one "
                   "character at a time; its cross-attention says which audio frames it reads for each. Dynamic "
                   "time warping through that map gives each word a start and an end (orange), drawn against the "
                   "times eSpeak NG spoke them at (green).</small>"),
            row([self.example, self.view], align="center"),
            row([self.text, self.speak], align="center"),
            row([self.voice, self.rate], align="center"),
            self.status,
            row([self.audio]),
            row([figure_box(self.spectrogram, 900, min_width=320)]),
            row([figure_box(self.attention, 620, min_width=320),
                 W.VBox([self.table], layout=W.Layout(flex="1 1 330px", min_width="280px", overflow="auto"))]),
            W.HTML(f"<small>{card_text}Sentences: words of explorer.data.speech.WORDS (a-z, eSpeak times each word "
                   f"on its own); at most {self.config.max_text} characters and "
                   f"{self.config.max_frames * FRAME_SECONDS:.0f} s of audio.</small>"),
            WidthWatcher(),
        ])
        self.widget.add_class("sp-app")
        harden(self.widget, self.status, "sp-error")

    # --- computation ----------------------------------------------------------------------------------
    def _example_utterance(self, index: int) -> Utterance:
        if index not in self._examples:
            e = EXAMPLES[index]
            self._examples[index] = as_heard(synthesize(e.text, e.voice, e.rate))
        return self._examples[index]

    def _spoken(self) -> Utterance:
        """The text box's sentence spoken with the chosen voice and rate; refuses what the model cannot take."""
        text = self.text.value
        encode_text(text, self.config.max_text)  # empty, too long or outside a-z and space: the model's message
        # words eSpeak merges raise a ValueError, a missing eSpeak NG an EspeakMissing (a RuntimeError): both are
        # shown as they are (see _callbacks.SHOWN)
        return as_heard(synthesize(text, self.voice.value, self.rate.value))

    def _compute(self, utterance: Utterance) -> tuple[Utterance, torch.Tensor, WordAlignment]:
        """Features and word times of ``utterance``; changes no state (a refusal leaves the app as it was)."""
        mel_frames = len(utterance.audio) // HOP_LENGTH
        frames = encoder_frames(max(mel_frames, 1))
        limit = self.config.max_frames
        if frames > limit:
            raise ValueError(f"the spoken sentence is {utterance.duration:.1f} s long; the model takes at most "
                             f"{limit * FRAME_SECONDS:.0f} s of audio: use fewer words or a faster rate")
        c = self.config
        check("attention_math", frames, d=c.embed, heads=c.heads, batch=c.encoder_layers + c.decoder_layers)
        hit = self._aligned.get(id(utterance))
        if hit is not None and hit[0] is utterance:  # an example shown before (its utterance is kept): no model run
            return hit
        mel = log_mel(utterance.audio)  # (80, frame)
        with torch.no_grad():
            alignment = align_words(self.model, mel, utterance.text, **self.setting)
        if any(utterance is kept for kept in self._examples.values()):
            self._aligned[id(utterance)] = (utterance, mel, alignment)
        return utterance, mel, alignment

    def _apply(self, utterance: Utterance, mel: torch.Tensor, alignment: WordAlignment) -> None:
        self.utterance, self.mel, self.alignment = utterance, mel, alignment
        self.errors = word_errors(utterance, alignment)

    # --- figures and text -----------------------------------------------------------------------------
    def _spectrogram_figure(self):
        u, a = self.utterance, self.alignment
        return spectrogram_spec(self.mel.numpy(), u.words, u.starts, u.ends, a.starts, a.ends, HOP_SECONDS)

    def _attention_figure(self):
        a = self.alignment
        rows, cols = a.path
        if self.view.value == ALIGNMENT:
            values = a.matrix
            title = f"alignment matrix ({_heads_text(self.heads)}) and the DTW path"
            bar = "standardised"
        else:
            layer, head = divmod(self.view.value, self.config.heads)
            values = np.asarray(a.patterns)[layer, head]
            title = f"cross-attention of layer {layer + 1}, head {head + 1}, and the DTW path"
            bar = "attention"
        return attention_spec(np.asarray(values), list(a.tokens), rows, cols, FRAME_SECONDS, title, bar)

    def _update_text(self) -> None:
        u, a = self.utterance, self.alignment
        start_err, end_err, mae = self.errors
        rows = "".join(
            f"<tr><td>{html.escape(w)}</td><td>{ts * 1000:.0f}</td><td>{te * 1000:.0f}</td>"
            f"<td>{ps * 1000:.0f}</td><td>{pe * 1000:.0f}</td><td>{es:+.0f}</td><td>{ee:+.0f}</td></tr>"
            for w, ts, te, ps, pe, es, ee in zip(u.words, u.starts, u.ends, a.starts, a.ends, start_err, end_err))
        attributes = {"text": u.text, "voice": u.voice, "rate": str(u.rate), "mae": repr(mae),
                      "true-starts": " ".join(map(repr, u.starts.tolist())),
                      "true-ends": " ".join(map(repr, u.ends.tolist())),
                      "starts": " ".join(repr(float(x)) for x in a.starts),
                      "ends": " ".join(repr(float(x)) for x in a.ends)}
        data = " ".join(f"data-{key}=\"{html.escape(value, quote=True)}\"" for key, value in attributes.items())
        self.table.value = (
            f"<div class='sp-reading' {data}><table class='sp-table' style='font-size:12px'>"
            "<tr><th rowspan='2'>word</th><th colspan='2'>true (ms)</th><th colspan='2'>predicted (ms)</th>"
            "<th colspan='2'>error (ms)</th></tr><tr><th>start</th><th>end</th><th>start</th><th>end</th>"
            f"<th>start</th><th>end</th></tr>{rows}</table>"
            f"<div class='sp-mae' style='font-size:13px'>mean absolute error <b>{mae:.0f} ms</b> over "
            f"{2 * len(u.words)} word boundaries</div></div>")
        self.status.value = (f"<div class='sp-spoken' style='font-size:14px'>“{html.escape(u.text)}” — "
                             f"{html.escape(u.voice)}, {u.rate} words/min, {u.duration:.2f} s; word times from "
                             f"{html.escape(_heads_text(self.heads))}: mean error {mae:.0f} ms.</div>")

    def _show(self, utterance: Utterance) -> None:
        """Compute ``utterance``'s word times and, only if that worked, draw them (else nothing changes)."""
        self._apply(*self._compute(utterance))
        self.wav = wav_bytes(utterance.audio)
        # the attention map first, the audio last: the page handles the updates in the order they arrive
        self.attention.update(self._attention_figure())
        self.spectrogram.update(self._spectrogram_figure())
        self._update_text()
        self.audio.value = self.wav

    # --- callbacks: public endpoints, run through ``callback`` (they never raise into the kernel) ----------
    def _on_example(self) -> None:
        if self._busy:
            return
        index = self.example.value
        try:
            self._show(self._spoken() if index == TYPED else self._example_utterance(index))
        except Exception:
            with quietly(self):
                self.example.value = self._shown  # the dropdown names what is drawn
            raise
        self._shown = index
        if index != TYPED:
            e = EXAMPLES[index]
            with quietly(self):
                self.text.value, self.voice.value, self.rate.value = e.text, e.voice, e.rate

    def _on_speak(self) -> None:
        self._show(self._spoken())
        self._shown = TYPED
        with quietly(self):
            self.example.value = TYPED

    def _on_view(self) -> None:
        if self._busy:
            return
        self.attention.update(self._attention_figure())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

