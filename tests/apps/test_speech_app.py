"""The Speech app draws the library's numbers for the clip it holds. References are computed here another way: the
cross-attention recorded with ``explorer.record`` on a teacher-forced forward pass, the log-mel of the app's clip,
``align_words`` run on them, the WAV decoded with the stdlib ``wave`` module, the MAE and the table's numbers by hand.
Every bad input gives its message in the status line and leaves the clip, the figures and the audio as they were.
The model is a seeded, untrained TinyWhisper (the app takes ``model=``): the numbers are checked, not their quality.
"""

from __future__ import annotations

import io
import re
import wave

import numpy as np
import pytest
import torch

from explorer import record
from explorer.analysis.alignment import align_words
from explorer.apps import speech as speech_app
from explorer.apps._callbacks import single_thread
from explorer.analysis.speech_study import chosen_setting
from explorer.apps.speech import ALIGNMENT, EXAMPLES, TYPED, SpeechApp, pcm16, wav_bytes
from explorer.data.speech import INSTALL_HINT, SAMPLE_RATE, EspeakMissing, log_mel, synthesize
from explorer.guard import ENV_BUDGET
from explorer.models.speech import SOT, TinyWhisper, encode_text, encoder_frames

HEADS = [(1, 0), (0, 2)]
LONG_TEXT = "remember whisper wander explain measure notice answer borrow choose divide gather juggle paint"  # 8.5 s at 100


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyWhisper().eval()


@pytest.fixture(scope="module")
def app(model):
    return SpeechApp(model=model, card={"test": {"wer": 0.25}}, heads=HEADS)


def recorded_patterns(model, audio: np.ndarray, text: str) -> np.ndarray:
    """``[layer, head, token, frame]`` cross-attention of a teacher-forced pass, recorded at the hook points."""
    names = [f"decoder.{i}.cross_attn.hook_pattern" for i in range(model.config.decoder_layers)]
    tokens = torch.tensor([[SOT] + encode_text(text)])
    with torch.no_grad(), record(model, names) as trace:
        model(log_mel(audio)[None], tokens)
    return torch.stack([trace[name][0] for name in names]).numpy()


def shape_x(figure, name: str) -> tuple[float, float]:
    shape = next(s for s in figure.layout.shapes if s.name == name)
    return shape.x0, shape.x1


def drawn_spans(figure, kind: str, n: int) -> dict[str, np.ndarray]:
    return {"strips": np.array([shape_x(figure, f"{kind} {i}") for i in range(n)]),
            "starts": np.array([shape_x(figure, f"{kind} start {i}") for i in range(n)]),
            "ends": np.array([shape_x(figure, f"{kind} end {i}") for i in range(n)])}


def snapshot(app) -> tuple:
    return (app.utterance, app.alignment, app.wav, app.audio.value, app.table.value, app.spectrogram.revision,
            app.attention.revision, app.spectrogram.traces, app.attention.traces, app.example.value)


def check_drawn(app, model) -> None:
    """Everything drawn is the library's numbers for the clip the app holds."""
    u, a = app.utterance, app.alignment
    np.testing.assert_array_equal(u.audio, pcm16(u.audio) / 32768)  # the clip is what the WAV holds
    mel = log_mel(u.audio)
    torch.testing.assert_close(app.mel, mel, rtol=0, atol=0)
    want = align_words(model, mel, u.text, **{**chosen_setting(), "heads": HEADS})
    np.testing.assert_array_equal(a.starts, want.starts)
    np.testing.assert_array_equal(a.ends, want.ends)
    np.testing.assert_array_equal(a.path[0], want.path[0])
    np.testing.assert_array_equal(a.path[1], want.path[1])
    np.testing.assert_allclose(a.patterns, recorded_patterns(model, u.audio, u.text), rtol=0, atol=1e-6)
    assert a.heads == HEADS and a.words == u.words
    # spectrogram: the mel on a 10 ms axis, true spans = the Utterance's, predicted = the WordAlignment's (exact)
    fig = app.spectrogram.figure
    np.testing.assert_array_equal(fig.data[0].z, mel.numpy())
    np.testing.assert_allclose(fig.data[0].x, np.arange(mel.shape[1]) * 0.01, rtol=0, atol=1e-12)
    n = len(u.words)
    for kind, starts, ends in (("true", u.starts, u.ends), ("predicted", a.starts, a.ends)):
        drawn = drawn_spans(fig, kind, n)
        np.testing.assert_array_equal(drawn["strips"], np.stack([starts, ends], 1))
        np.testing.assert_array_equal(drawn["starts"], np.stack([starts, starts], 1))
        np.testing.assert_array_equal(drawn["ends"], np.stack([ends, ends], 1))
    assert [s.label.text for s in fig.layout.shapes if re.fullmatch(r"true \d+", s.name)] == u.words
    # the path over the attention map, in seconds
    att = app.attention.figure
    np.testing.assert_allclose(att.data[1].x, a.path[1] * 0.02, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(att.data[1].y, a.path[0])
    assert att.data[0].z.shape == (len(u.text) + 1, encoder_frames(len(u.audio) // 160))
    # the audio widget plays the clip
    assert app.audio.value == app.wav == wav_bytes(u.audio)


# --- what is drawn ------------------------------------------------------------------------------------------------


def test_the_first_example_is_drawn_with_the_library_numbers(app, model):
    e = EXAMPLES[0]
    assert (app.utterance.text, app.utterance.voice, app.utterance.rate) == (e.text, e.voice, e.rate)
    fresh = synthesize(e.text, e.voice, e.rate)  # eSpeak NG through its worker: the same request, the same clip
    np.testing.assert_array_equal(app.utterance.starts, fresh.starts)
    np.testing.assert_array_equal(app.utterance.ends, fresh.ends)
    np.testing.assert_allclose(app.utterance.audio, fresh.audio, rtol=0, atol=0.5 / 32768 + 1e-9)  # 16-bit rounding
    assert (app.text.value, app.voice.value, app.rate.value, app.example.value) == (e.text, e.voice, e.rate, 0)
    check_drawn(app, model)
    assert "sp-error" not in app.status.value and e.text in app.status.value


@pytest.mark.parametrize("view", [ALIGNMENT, 0, 3, 5, 7], ids=lambda v: "alignment" if v < 0 else f"L{v // 4}H{v % 4}")
def test_the_heatmap_is_the_chosen_heads_matrix_or_the_recorded_pattern(app, model, view):
    before = app.utterance, app.alignment
    app.view.value = view
    assert (app.utterance, app.alignment) == before  # a view is drawn from what was recorded: no new run
    z = app.attention.figure.data[0].z
    if view == ALIGNMENT:
        np.testing.assert_array_equal(z, app.alignment.matrix.astype(np.float32))
    else:
        layer, head = divmod(view, 4)
        want = recorded_patterns(model, app.utterance.audio, app.utterance.text)[layer, head]
        np.testing.assert_allclose(z, want, rtol=0, atol=1e-6)
        assert f"layer {layer + 1}, head {head + 1}" in app.attention.figure.layout.title.text
    np.testing.assert_allclose(app.attention.figure.data[1].x, app.alignment.path[1] * 0.02, rtol=0, atol=1e-12)
    app.view.value = ALIGNMENT


def test_the_wav_decodes_to_the_clip_at_16_khz(app):
    with wave.open(io.BytesIO(app.audio.value)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, SAMPLE_RATE)
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    np.testing.assert_array_equal(samples / 32768, app.utterance.audio)  # exactly the clip the model heard
    assert app.audio.format == "wav" and not app.audio.autoplay


def test_the_table_lists_each_word_with_its_errors_and_the_mae(app):
    u, a = app.utterance, app.alignment
    mae = np.mean(np.abs(np.concatenate([a.starts - u.starts, a.ends - u.ends]))) * 1000  # by hand
    reading = app.table.value
    assert f'data-mae="{app.errors[2]!r}"' in reading and app.errors[2] == pytest.approx(mae, abs=1e-9)
    assert f"<b>{mae:.0f} ms</b>" in reading and f"{2 * len(u.words)} word boundaries" in reading
    rows = re.findall(r"<tr><td>([a-z]+)</td>((?:<td>[^<]*</td>){6})</tr>", reading)
    assert [w for w, _ in rows] == u.words
    for i, (_, cells) in enumerate(rows):
        numbers = [float(x) for x in re.findall(r"<td>([^<]*)</td>", cells)]
        want = [u.starts[i] * 1000, u.ends[i] * 1000, a.starts[i] * 1000, a.ends[i] * 1000,
                (a.starts[i] - u.starts[i]) * 1000, (a.ends[i] - u.ends[i]) * 1000]
        np.testing.assert_allclose(numbers, want, rtol=0, atol=0.5 + 1e-9)  # printed to the ms
    assert "25.0%" in app.widget.children[-2].value  # the card's word error rate


# --- speaking and examples --------------------------------------------------------------------------------------


def test_speak_runs_the_typed_sentence(app, model):
    app.text.value = "Green  apple river"
    app.voice.value = "en-us+f4"
    app.rate.value = 150
    revision = app.spectrogram.revision
    app.speak.click()
    u = app.utterance
    assert (u.text, u.words, u.voice, u.rate) == ("green apple river", ["green", "apple", "river"], "en-us+f4", 150)
    assert app.example.value == TYPED and app.spectrogram.revision > revision
    check_drawn(app, model)
    assert "green apple river" in app.status.value and "sp-error" not in app.status.value


def test_choosing_an_example_speaks_it_and_sets_the_controls(app, model):
    app.example.value = 2
    e = EXAMPLES[2]
    assert (app.utterance.text, app.utterance.voice) == (e.text, e.voice)
    assert (app.text.value, app.voice.value, app.rate.value) == (e.text, e.voice, e.rate)
    check_drawn(app, model)
    cached = app.utterance
    app.example.value = 0
    app.example.value = 2
    assert app.utterance is cached  # an example is synthesised once
    app.example.value = TYPED  # "your sentence": the text box, spoken
    assert app.utterance.text == e.text and app.utterance is not cached and app.example.value == TYPED


# --- bad input: a message, and nothing else changes ---------------------------------------------------------------


def _bad_text(text: str, rate: int = 175):
    def setup(app, _monkeypatch):
        app.text.value, app.rate.value = text, rate
    return setup


def _no_espeak(app, monkeypatch):
    def missing(*_args, **_kwargs):
        raise EspeakMissing(INSTALL_HINT)
    monkeypatch.setattr(speech_app, "synthesize", missing)
    app.text.value = "green apple"


def _tiny_budget(app, monkeypatch):
    monkeypatch.setenv(ENV_BUDGET, "1000")
    app.text.value = "green apple"


BAD = {
    "empty": (_bad_text("   "), "at least one word"),
    "digits": (_bad_text("hello 123"), "outside the model's vocabulary (a-z and space): '123'"),
    "punctuation": (_bad_text("green, apple!"), "outside the model's vocabulary"),
    "past the context": (_bad_text("apple " * 17), "at most 95"),
    "merged words": (_bad_text("sat on the mat"), "did not time every word"),
    "longer than 8 s": (_bad_text(LONG_TEXT, rate=100), "the model takes at most 8 s of audio"),
    "memory guard": (_tiny_budget, "attention_math at n="),
    "no espeak": (_no_espeak, "eSpeak NG is not installed"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_shows_its_message_and_keeps_what_was_drawn(app, model, monkeypatch, case):
    setup, message = BAD[case]
    app.example.value = 1
    before = snapshot(app)
    setup(app, monkeypatch)
    app.speak.click()
    status = app.status.value.replace("&#x27;", "'")
    assert "sp-error" in status and message in status, status
    assert snapshot(app) == before
    monkeypatch.undo()
    app.text.value = EXAMPLES[0].text  # the tab keeps working
    app.speak.click()
    assert app.utterance.text == EXAMPLES[0].text and "sp-error" not in app.status.value
    check_drawn(app, model)


def test_a_failing_example_puts_the_dropdown_back(model, monkeypatch):
    app = SpeechApp(model=model, heads=HEADS)
    before = snapshot(app)

    def missing(*_args, **_kwargs):
        raise EspeakMissing(INSTALL_HINT)

    monkeypatch.setattr(speech_app, "synthesize", missing)
    app.example.value = 3  # not synthesised yet
    assert "eSpeak NG is not installed" in app.status.value
    assert app.example.value == 0 and snapshot(app) == before


def test_the_guard_sees_the_clips_encoder_frames_before_the_model_runs(app, monkeypatch):
    calls = []
    real = speech_app.check

    def spy(op, n, **kwargs):
        calls.append((op, n, kwargs))
        return real(op, n, **kwargs)

    monkeypatch.setattr(speech_app, "check", spy)
    app.text.value = "seven rabbit"
    app.speak.click()
    c = app.config
    assert calls == [("attention_math", encoder_frames(len(app.utterance.audio) // 160),
                      {"d": c.embed, "heads": c.heads, "batch": c.encoder_layers + c.decoder_layers})]
    monkeypatch.setattr(speech_app, "align_words", lambda *a, **k: pytest.fail("ran past the guard"))
    monkeypatch.setenv(ENV_BUDGET, "1000")
    app.text.value = "green apple"
    app.speak.click()
    assert "attention_math" in app.status.value and app.utterance.text == "seven rabbit"


# --- heads and arguments ------------------------------------------------------------------------------------------


def test_the_setting_comes_from_the_study(app):
    # the shipped study's width and space convention; the heads given to the app (HEADS) replace the study's
    assert app.setting == {**chosen_setting(), "heads": HEADS}
    assert app.alignment.heads == list(HEADS) and app.alignment.space == chosen_setting()["space"]


def test_all_heads_label_and_bad_example(model):
    app = SpeechApp(model=model, heads="all", example=1)
    assert app.view.options[0][0] == "alignment: all heads" and app.utterance.text == EXAMPLES[1].text
    assert len(app.alignment.heads) == model.config.decoder_layers * model.config.heads
    with pytest.raises(ValueError, match="example"):
        SpeechApp(model=model, example=len(EXAMPLES))
