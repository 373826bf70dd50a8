"""The Speech app in a real browser, in Voila (the dashboard's "Speech" tab) and in JupyterLab (a scratch notebook
that displays ``SpeechApp()``): the page draws the spectrogram and the attention map; the word spans drawn in the
page (``gd.layout.shapes`` of the spectrogram) are the library's numbers for the clip the page plays; typing a
sentence and pressing Speak redraws with its words; bad input ("hello 123") shows its message and the figures stay;
the page has an audio element playing the clip.

References come from the page's own audio: the WAV the ``<audio>`` element plays is exactly the clip the model was
given (``explorer.apps.speech.as_heard``), so the test decodes it with ``wave``, computes its log-mel and runs
``align_words`` with the shipped model and heads, and compares the predicted spans, the spectrogram and the DTW path.
The *true* spans are compared with a fresh synthesis of the sentence, voice and rate the page names (eSpeak NG runs
in a worker that gives the same request the same clip), and in JupyterLab also with the kernel's own ``Utterance``;
all to 1 ms."""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import time
import wave

import numpy as np
import pytest

from explorer.analysis.alignment import align_words
from explorer.apps._callbacks import single_thread
from explorer.analysis.speech_study import chosen_setting
from explorer.apps.speech import EXAMPLES
from explorer.data.speech import log_mel, synthesize
from explorer.models.speech import load_speech
from tests.browser.conftest import KNOWN_OFFLINE, TIMINGS, open_tab
from tests.browser.lab import LAB_KNOWN_OFFLINE, app_notebook, layout_problems

pytestmark = pytest.mark.browser

SPECTROGRAM = ".sp-spectrogram.js-plotly-plot"
ATTENTION = ".sp-attention.js-plotly-plot"
SCRATCH = "speech_scratch.ipynb"
MS = 1e-3 + 1e-9  # drawn boundaries equal the library's to 1 ms
NEW_TEXT = "seven green rabbit"

# What the page drew: the spectrogram's shapes and heatmap, the path and map of the attention figure, the words
# table's reading, and the bytes the <audio> element plays (fetched from its blob URL, base64).
_DRAWN = f"""async () => {{
    const s = document.querySelector('{SPECTROGRAM}'), a = document.querySelector('{ATTENTION}');
    const r = document.querySelector('.sp-words .sp-reading'), audio = document.querySelector('.sp-app audio');
    if (!s || !a || !s.data || !a.data || !s.layout || !s.dataset.revision || !a.dataset.revision || !r || !audio
        || !audio.src) return null;
    const bytes = new Uint8Array(await (await fetch(audio.src)).arrayBuffer());
    let binary = '';
    for (let i = 0; i < bytes.length; i += 8192) binary += String.fromCharCode(...bytes.subarray(i, i + 8192));
    const rows = (z) => Array.from(z, (row) => Array.from(row));
    return {{revisions: [s.dataset.revision, a.dataset.revision], text: r.dataset.text, voice: r.dataset.voice,
             rate: Number(r.dataset.rate), shapes: (s.layout.shapes || []).map((x) => [x.name, x.x0, x.x1,
                                                                                      x.label ? x.label.text : null]),
             mel: rows(s.data[0].z), melX: Array.from(s.data[0].x), matrix: rows(a.data[0].z),
             pathX: Array.from(a.data[1].x), pathY: Array.from(a.data[1].y), wav: btoa(binary),
             status: document.querySelector('.sp-status').innerText}};
}}"""


@functools.lru_cache(maxsize=1)
def _model():
    return load_speech()[0]


@functools.lru_cache(maxsize=8)
def _library(wav: str, text: str):
    """(log-mel, WordAlignment) of the clip in ``wav`` (base64 WAV bytes) with the shipped model and heads."""
    with wave.open(io.BytesIO(base64.b64decode(wav))) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 16_000)
        audio = (np.frombuffer(f.readframes(f.getnframes()), dtype="<i2") / 32768).astype(np.float32)
    mel = log_mel(audio)
    with single_thread():  # beside the kernel on 2 shared cores
        return mel.numpy(), align_words(_model(), mel, text, **chosen_setting())


@functools.lru_cache(maxsize=8)
def _resynthesised(text: str, voice: str, rate: int) -> tuple[np.ndarray, np.ndarray]:
    u = synthesize(text, voice, rate)
    return u.starts, u.ends


def _spans(seen: dict, kind: str, n: int) -> dict[str, np.ndarray]:
    shapes = {name: (x0, x1, label) for name, x0, x1, label in seen["shapes"]}
    return {"strips": np.array([shapes[f"{kind} {i}"][:2] for i in range(n)]),
            "starts": np.array([shapes[f"{kind} start {i}"][:2] for i in range(n)]),
            "ends": np.array([shapes[f"{kind} end {i}"][:2] for i in range(n)]),
            "labels": [shapes[f"{kind} {i}"][2] for i in range(n)]}


def _compare(seen: dict, truth) -> None:
    """Assert the page shows the library's numbers for its own clip (``truth(seen)`` = the true spans and their
    tolerance)."""
    words = seen["text"].split()
    mel, a = _library(seen["wav"], seen["text"])
    np.testing.assert_allclose(np.array(seen["mel"]), mel, rtol=0, atol=1e-4)  # float32 through the page
    np.testing.assert_allclose(seen["melX"], np.arange(mel.shape[1]) * 0.01, rtol=0, atol=1e-9)
    starts, ends, tolerance = truth(seen)
    for kind, want_starts, want_ends, atol in (("predicted", a.starts, a.ends, MS), ("true", starts, ends, tolerance)):
        drawn = _spans(seen, kind, len(words))
        assert drawn["labels"] == words, kind
        np.testing.assert_allclose(drawn["strips"], np.stack([want_starts, want_ends], 1), rtol=0, atol=atol)
        np.testing.assert_allclose(drawn["starts"], np.stack([want_starts, want_starts], 1), rtol=0, atol=atol)
        np.testing.assert_allclose(drawn["ends"], np.stack([want_ends, want_ends], 1), rtol=0, atol=atol)
    assert len(seen["shapes"]) == 6 * len(words)
    np.testing.assert_allclose(seen["pathX"], a.path[1] * 0.02, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(seen["pathY"], a.path[0])
    np.testing.assert_allclose(np.array(seen["matrix"]), a.matrix, rtol=0, atol=1e-4)  # the alignment view


def _wait(page, text: str, truth, timeout: float = 60.0) -> dict:
    """Poll until the page shows ``text`` with the library's numbers for its clip; return what it shows."""
    deadline = time.monotonic() + timeout
    while True:
        seen = page.evaluate(_DRAWN)
        if seen and seen["text"] == text:
            try:
                _compare(seen, truth)
                return seen
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        elif time.monotonic() > deadline:
            raise AssertionError(f"the page does not show {text!r}: {seen and seen['text']!r}, "
                                 f"{seen and seen['status']!r}")
        page.wait_for_timeout(200)


def _speak(page, text: str) -> None:
    field = page.locator(".sp-text input")
    field.fill(text)
    field.press("Enter")  # continuous_update=False: Enter sends the value
    page.locator("button.sp-speak").click()


def _interact(page, label: str, truth) -> None:
    """The first example drawn; a typed sentence spoken and drawn; "hello 123" refused, the figures kept."""
    first = _wait(page, EXAMPLES[0].text, truth)
    duration = page.evaluate("""async () => {
        const audio = document.querySelector('.sp-app audio');
        if (audio.readyState < 1) await new Promise((ok) => { audio.onloadedmetadata = ok; setTimeout(ok, 5000); });
        return audio.duration;
    }""")
    with wave.open(io.BytesIO(base64.b64decode(first["wav"]))) as f:
        assert duration == pytest.approx(f.getnframes() / 16_000, abs=MS)  # the browser decodes the clip
    start = time.perf_counter()
    _speak(page, NEW_TEXT)
    spoken = _wait(page, NEW_TEXT, truth)
    TIMINGS[f"speech ({label}): Speak to drawn (s)"] = time.perf_counter() - start
    assert spoken["revisions"] != first["revisions"] and spoken["wav"] != first["wav"]
    _speak(page, "hello 123")
    page.wait_for_selector(".sp-status .sp-error", state="visible", timeout=30_000)
    message = page.locator(".sp-status .sp-error").inner_text()
    assert "outside the model's vocabulary" in message and "123" in message
    page.wait_for_timeout(500)  # nothing else may arrive
    kept = page.evaluate(_DRAWN)
    assert kept == {**spoken, "status": kept["status"]}  # same figures (same revisions), same clip
    assert page.locator(f"{SPECTROGRAM} .main-svg").count() and page.locator(f"{ATTENTION} .main-svg").count()


def test_voila_tab_draws_the_library_numbers_speaks_and_refuses(dashboard_page):
    page = dashboard_page
    start = time.perf_counter()
    open_tab(page, "Speech", f"{SPECTROGRAM} .main-svg", timeout=120_000)
    page.wait_for_selector(f"{ATTENTION} .main-svg", state="visible", timeout=30_000)
    TIMINGS["speech (voila): tab open to plot visible (s)"] = time.perf_counter() - start

    def truth(seen):
        return (*_resynthesised(seen["text"], seen["voice"], seen["rate"]), MS)

    try:
        _interact(page, "voila", truth)
        assert layout_problems(page) == []  # this tab at 1400 px (every tab at 1280 and 1920: test_dashboard.py)
        assert page.errors == []
        assert [url for url in page.failed_requests if not url.startswith(KNOWN_OFFLINE)] == []
    finally:
        open_tab(page, "Receptive fields", ".rf-figure.js-plotly-plot .main-svg")  # as the other tests expect


@contextlib.contextmanager
def _lab_notebook(lab):
    """The session's JupyterLab with a scratch notebook displaying ``app = SpeechApp()``, run; always closed."""
    server, browser = lab
    with app_notebook(browser, "SpeechApp", SCRATCH, SPECTROGRAM, "speech", server=server) as nb:
        nb.page.wait_for_selector(f"{ATTENTION} .main-svg", state="visible", timeout=30_000)
        yield nb


def test_lab_notebook_draws_the_library_numbers_speaks_and_refuses(lab):
    with _lab_notebook(lab) as nb:
        outputs = nb.outputs()
        assert [o["text"] for o in outputs if o["type"] == "error"] == []
        assert [o["text"] for o in outputs if o["type"] == "stream" and o["name"] == "stderr"] == []

        def truth(seen):
            """A fresh synthesis, which is also the kernel's own Utterance (what eSpeak NG reported for the clip)."""
            code = "import json; u = app.utterance; print(json.dumps([u.text, u.starts.tolist(), u.ends.tolist()]))"
            text, starts, ends = json.loads(nb.kernel(code).strip().splitlines()[-1])
            fresh = _resynthesised(seen["text"], seen["voice"], seen["rate"])
            assert text == seen["text"]
            np.testing.assert_allclose(np.stack([starts, ends]), np.stack(fresh), rtol=0, atol=MS)
            return (*fresh, MS)

        _interact(nb.page, "lab", truth)
        assert layout_problems(nb.page, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output") == []
        assert nb.page.locator("text=Error displaying widget").count() == 0
        assert nb.errors == [] and [u for u in nb.failed_requests if not u.startswith(LAB_KNOWN_OFFLINE)] == []
