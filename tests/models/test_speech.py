"""The tiny Whisper: shapes and hook points, masks checked against unpadded runs, positions against Whisper's formula,
the front-end's receptive field against the closed form, the shipped weights against freshly synthesised speech."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from explorer import record
from explorer.analysis import receptive_field
from explorer.analysis.speech_metrics import edit_distance, word_error_rate
from explorer.data import speech as S
from explorer.models.speech import (
    EOT, PAD, RETRAIN_COMMAND, SOT, TOKENS, SpeechConfig, TinyWhisper, batch_mel, batch_tokens, decode_tokens,
    default_speech_dir, encode_text, encoder_frames, load_speech, sinusoids,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyWhisper(SpeechConfig(embed=32, heads=2, encoder_layers=1, decoder_layers=2, max_frames=200)).eval()


@pytest.fixture(scope="module")
def mels():
    return [torch.randn(80, n) for n in (57, 80)]


def test_encoder_frames_match_the_conv_output(model):
    for n in (1, 2, 3, 57, 80, 399):
        out = model.conv2(model.conv1(torch.zeros(1, 80, n)))
        assert out.shape[-1] == encoder_frames(n) == math.ceil(n / 2)


def test_hook_points_and_shapes(model, mels):
    tokens = torch.tensor([[SOT] + encode_text("red fox")])
    with record(model, ["*.hook_pattern", "hook_audio", "conv2.hook_out"]) as trace:
        logits = model(mels[1][None], tokens)
    assert logits.shape == (1, 8, len(TOKENS))
    assert trace["decoder.1.cross_attn.hook_pattern"].shape == (1, 2, 8, 40)
    assert trace["encoder.0.attn.hook_pattern"].shape == (1, 2, 40, 40)
    assert trace["decoder.0.self_attn.hook_pattern"].shape == (1, 2, 8, 8)
    assert trace["hook_audio"].shape == (1, 40, 32)
    assert trace["conv2.hook_out"].shape == (1, 32, 40)
    cross = trace["decoder.0.cross_attn.hook_pattern"]
    torch.testing.assert_close(cross.sum(-1), torch.ones(1, 2, 8), rtol=0, atol=1e-5)  # fp32 softmax rows


def test_decoder_is_causal(model, mels):
    a = torch.tensor([[SOT] + encode_text("red fox")])
    b = a.clone()
    b[0, -1] = encode_text("z")[0]
    la, lb = model(mels[0][None], a), model(mels[0][None], b)
    torch.testing.assert_close(la[:, :-1], lb[:, :-1], rtol=0, atol=1e-6)


def test_padding_changes_nothing(model, mels):
    batch, lengths = batch_mel(mels)
    inputs, _ = batch_tokens(["red fox", "a"], 30)
    together = model(batch, inputs, lengths)
    for i, mel in enumerate(mels):
        alone = model(mel[None], inputs[i:i + 1, : (len(["red fox", "a"][i]) + 1)])
        torch.testing.assert_close(together[i, : alone.shape[1]], alone[0], rtol=0, atol=2e-5)


def test_sinusoids_follow_whisper():
    pos = sinusoids(10, 8)
    step = math.log(10_000) / 3
    for t in (0, 3, 9):
        for c in range(4):
            assert pos[t, c].item() == pytest.approx(math.sin(t * math.exp(-step * c)), abs=1e-6)
            assert pos[t, 4 + c].item() == pytest.approx(math.cos(t * math.exp(-step * c)), abs=1e-6)


def test_front_end_receptive_field_in_ms(model):
    rf = receptive_field(model.front_end(), spatial_dims=1).output
    # closed form (Araujo et al. 2019): 1 + (3 - 1) + (3 - 1) * 1 = 5 mel frames, stride 2, padding 1 + 1 * 1
    assert rf.size == (5,) and rf.stride == (2,) and rf.padding == (2,)
    # 5 frames of 10 ms hop, each a 25 ms window: 4 * 10 + 25 = 65 ms; one encoder frame every 20 ms
    assert (rf.size[0] - 1) * 1000 * S.HOP_SECONDS + 1000 * S.N_FFT / S.SAMPLE_RATE == pytest.approx(65.0)


def test_text_round_trip_and_bad_text():
    ids = encode_text("  Seven  Green apple ")
    assert decode_tokens(ids + [EOT, 5]) == "seven green apple"
    assert PAD not in ids and SOT not in ids
    with pytest.raises(ValueError, match="at least one word"):
        encode_text("   ")
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        encode_text("hello 123!")
    with pytest.raises(ValueError, match="at most 5"):
        encode_text("abcdef", max_text=5)
    with pytest.raises(TypeError, match="text"):
        encode_text(None)


def test_bad_inputs_are_named(model):
    with pytest.raises(ValueError, match="mel"):
        model.encode(torch.zeros(1, 40, 10))
    with pytest.raises(ValueError, match="at most 200 encoder frames"):
        model.encode(torch.zeros(1, 80, 401))
    audio, _ = model.encode(torch.zeros(1, 80, 10))
    with pytest.raises(ValueError, match="tokens"):
        model.decode(torch.zeros(1, 97, dtype=torch.long), audio)
    with pytest.raises(TypeError, match="tokens"):
        model.decode(torch.zeros(1, 3), audio)
    with pytest.raises(ValueError, match="mel_lengths"):
        model.encode(torch.zeros(2, 80, 10), torch.tensor([10, 11]))
    with pytest.raises(TypeError, match="config"):
        TinyWhisper(config={"embed": 8})


def test_word_error_rate_closed_form():
    assert edit_distance("a b c".split(), "a x c d".split()) == 2  # one substitution, one insertion
    assert word_error_rate(["a b c", "d e"], ["a x c d", "d e"]) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="same length"):
        word_error_rate(["a"], [])


def test_missing_or_broken_weights_name_the_retrain_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=RETRAIN_COMMAND):
        load_speech(tmp_path)
    folder = tmp_path / "speech"
    shutil.copytree(default_speech_dir(), folder)
    (folder / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=RETRAIN_COMMAND):
        load_speech(folder)


def test_shipped_weights_transcribe_fresh_held_out_speech():
    """Re-check the model card on a small fresh sample: the first 12 held-out utterances of the card's test set,
    synthesised again here (deterministic synthesis), transcribed exactly as the card says."""
    model, card = load_speech()
    test = card["test"]
    n = 12
    utterances = S.make_utterances(n, "test", card["test_seed"])  # the first n of the card's test set
    assert all(u.voice in card["test_voices"] for u in utterances)
    mel, lengths = batch_mel([S.log_mel(u.audio) for u in utterances])
    hyps = model.transcribe(mel, lengths)
    assert hyps == test["hypotheses"][:n]
    # and the card's WER is the WER of its own hypotheses (recomputed over its whole test set)
    refs = [u.text for u in S.make_utterances(test["utterances"], "test", card["test_seed"])][: len(test["hypotheses"])]
    assert word_error_rate(refs, test["hypotheses"]) == pytest.approx(test["wer"], abs=1e-12)
