"""The speech training script end to end on a tiny budget: deterministic, and writes what the card promises."""

import json

import pytest
import torch
from safetensors.torch import load_file

from explorer.models.speech import load_speech
from explorer.models.speech_card import render_model_card
from explorer.train.speech import main

pytestmark = pytest.mark.usefixtures("one_thread", "nondeterministic_afterwards")


@pytest.fixture()
def nondeterministic_afterwards():
    """main() switches torch to deterministic algorithms for its run; the tests after this one get torch back."""
    yield
    torch.use_deterministic_algorithms(False)

ARGS = ["--steps", "3", "--utterances", "6", "--test-utterances", "2", "--seed", "4"]


def test_two_runs_give_the_same_weights_and_a_complete_card(tmp_path):
    cards = [main([*ARGS, "--out", str(tmp_path / run)]) for run in ("a", "b")]
    a, b = (load_file(tmp_path / run / "weights.safetensors") for run in ("a", "b"))
    assert a.keys() == b.keys()
    for name in a:  # same seed, same synthesised data, one thread: bit-identical
        assert (a[name] == b[name]).all(), name
    card = json.loads((tmp_path / "a" / "model_card.json").read_text())
    assert card["steps"] == 3 and card["train_utterances"] == 6 and card["threads"] == 1
    assert card["test"]["utterances"] == 2 and len(card["test"]["hypotheses"]) == 2
    assert card["test"] == cards[1]["test"]
    assert (tmp_path / "a" / "MODEL_CARD.md").read_text() == render_model_card(card)
    model, loaded = load_speech(tmp_path / "a")
    assert loaded["config"] == card["config"] and not model.training


def test_bad_arguments_stop_the_script(tmp_path):
    with pytest.raises(SystemExit):
        main(["--steps", "0", "--out", str(tmp_path)])
