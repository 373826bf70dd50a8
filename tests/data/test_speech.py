"""Synthetic speech (eSpeak NG) and Whisper's log-mel features, against their independent references.

References: ``transformers.audio_utils.mel_filter_bank`` (the mel filters) and ``transformers.WhisperFeatureExtractor``
(the whole feature pipeline; its numpy STFT is independent of our ``torch.stft``); the sample counts of a polyphase
resampler; the noise power we asked for; the silence eSpeak leaves after its last phoneme.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.data import speech as S


@pytest.fixture(scope="module")
def clip() -> S.Utterance:
    return S.synthesize("seven green apple", "en-us+m3")


def test_espeak_comes_from_the_wheel():
    import espeakng_loader

    assert S.espeak_available()
    assert S.espeak_version().startswith("1.52")
    assert espeakng_loader.get_library_path().endswith("libespeak-ng.so")


def test_mel_filters_match_transformers():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=16000, norm="slaney", mel_scale="slaney").T
    ours = S.mel_filters().numpy()
    assert ours.shape == (80, 201)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)  # float32 storage of float64 filters


@pytest.mark.parametrize("source", ["speech", "noise"])
def test_log_mel_matches_whisper_feature_extractor(clip, source):
    from transformers import WhisperFeatureExtractor

    audio = clip.audio if source == "speech" else np.random.default_rng(0).standard_normal(12_345).astype(np.float32) * 0.1
    ref = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="np", padding="longest")
    ref = ref["input_features"][0]
    ours = S.log_mel(audio).numpy()
    assert ours.shape == (80, len(audio) // 160)
    assert ref.shape[1] >= ours.shape[1]
    # numpy float64 STFT (transformers) against torch float32: 1e-4 on values of order 1
    np.testing.assert_allclose(ours, ref[:, : ours.shape[1]], rtol=0, atol=1e-4)


def test_log_mel_batch_equals_items(clip):
    a = clip.audio[:16_000]
    b = np.roll(a, 800)
    batch = S.log_mel(np.stack([a, b]))
    torch.testing.assert_close(batch[0], S.log_mel(a), rtol=0, atol=1e-6)
    torch.testing.assert_close(batch[1], S.log_mel(b), rtol=0, atol=1e-6)


def test_word_times_are_ordered_and_inside_the_clip(clip):
    assert clip.words == ["seven", "green", "apple"]
    assert np.all(clip.starts < clip.ends)
    assert np.all(clip.ends[:-1] <= clip.starts[1:] + 1e-12)
    assert clip.starts[0] >= 0 and clip.ends[-1] <= clip.duration
    # resampled 22050 -> 16000 Hz: a polyphase resampler returns ceil(n * 320 / 441) samples
    raw_samples = round(clip.phonemes[-1][1] * S.ESPEAK_RATE)  # the last event is the end of the audio
    assert len(clip.audio) == -(-raw_samples * 320 // 441)


def test_after_the_last_word_eSpeak_is_silent(clip):
    audio = clip.audio.astype(np.float64)
    inside = audio[int(clip.starts[0] * 16000): int(clip.ends[-1] * 16000)]
    tail = audio[int(np.ceil(clip.ends[-1] * 16000)):]  # eSpeak's closing pause (about 7 ms)
    assert len(tail) >= 80
    assert np.sqrt(np.mean(tail ** 2)) < 0.02 * np.sqrt(np.mean(inside ** 2))


def test_word_start_is_the_first_phoneme_not_the_word_event():
    u = S.synthesize("quiet river", "en-us+m1")
    # the first phoneme of each word is one of the events we return, and the word's start is one of them
    starts = {round(t, 9) for _, t in u.phonemes}
    assert all(round(t, 9) in starts for t in u.starts)
    assert all(round(t, 9) in starts for t in u.ends)


def test_noise_level_is_what_was_asked():
    clean = S.synthesize("purple rocket", "en-us+f2", seed=5)  # same seed: the same eSpeak samples
    noisy = S.synthesize("purple rocket", "en-us+f2", snr_db=20.0, seed=5)
    noise = noisy.audio.astype(np.float64) - clean.audio.astype(np.float64)
    snr = 10 * np.log10(np.mean(clean.audio.astype(np.float64) ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(20.0, abs=0.3)  # finite-sample noise power: +-0.3 dB at ~10^4 samples


def test_utterances_are_reproducible_and_voices_are_split():
    a = S.make_utterances(3, "test", seed=7)
    b = S.make_utterances(3, "test", seed=7)
    for x, y in zip(a, b):
        assert x.text == y.text and x.voice == y.voice
        np.testing.assert_array_equal(x.audio, y.audio)
    train, val, test = (set(v.split("+")[1] for v in S.voices(s)) for s in ("train", "validation", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert {u.voice for u in S.make_utterances(len(S.voices("test")), "test", seed=1)} == set(S.voices("test"))


def test_every_vocabulary_word_is_timed_on_its_own():
    for i in range(0, len(S.WORDS), 8):
        words = S.WORDS[i:i + 8]
        u = S.synthesize(" ".join(words), "en-gb-x-rp+m2")
        assert u.words == list(words)


@pytest.mark.parametrize("kwargs, match", [
    ({"text": ""}, "text must contain at least one word"),
    ({"text": "   "}, "text must contain at least one word"),
    ({"text": "hello 123"}, "only letters a-z"),
    ({"text": 5}, "text"),
    ({"text": "apple", "voice": "nope+zz"}, "voice"),
    ({"text": "apple", "rate": 10}, "rate"),
    ({"text": "apple", "pitch": 150}, "pitch"),
    ({"text": "apple", "snr_db": float("nan")}, "snr_db"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        S.synthesize(**kwargs)


def test_merged_words_are_refused():
    with pytest.raises(ValueError, match="did not time every word"):
        S.synthesize("sat on the mat", "en-us")


def test_bad_audio_for_log_mel():
    with pytest.raises(TypeError, match="audio"):
        S.log_mel(np.zeros(1000, dtype=np.int16))
    with pytest.raises(ValueError, match="audio"):
        S.log_mel(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="split"):
        S.voices("dev")


def test_same_request_same_samples_whatever_came_before():
    first = S.synthesize("purple rocket", "en-us+m3", seed=3)
    S.synthesize("seven green apple", "en-gb-x-rp+f2", seed=9)  # a different history in the library
    again = S.synthesize("purple rocket", "en-us+m3", seed=3)
    np.testing.assert_array_equal(first.audio, again.audio)
    np.testing.assert_array_equal(first.starts, again.starts)


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path):
    # a worker that finds no library answers as the real one does when neither the wheel nor libespeak-ng loads
    fake = tmp_path / "worker.py"
    fake.write_text('import json, sys\nprint(json.dumps({"ok": False, "error": "no eSpeak NG library found"}))\n')
    monkeypatch.setattr(S, "_WORKER", fake)
    monkeypatch.setattr(S, "_ENGINE", None)
    assert not S.espeak_available()
    with pytest.raises(S.EspeakMissing, match="make setup"):
        S.synthesize("apple")


def test_worker_loads_the_wheels_library_and_data():
    import importlib.util

    spec = importlib.util.spec_from_file_location("worker", S._WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    lib, data = worker.load()
    assert data is not None and data.endswith(b"espeak-ng-data")
