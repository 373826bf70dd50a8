import json
import math
import shutil

import pytest
import torch

from explorer import record
from explorer.data.shapes import ANSWERS, VOCAB, sample_batch
from explorer.models import CrossModalConfig, CrossModalModel, load_cross_modal
from explorer.models.cross_modal import ANSWER_TOKEN, RETRAIN_COMMAND, default_cross_modal_dir

TEST_SEED = 2 * 10 ** 6 + 7  # held-out scenes for this test: neither the training seeds (< 10**6) nor the card's


@pytest.fixture(scope="module")
def batch():
    return sample_batch(8, seed=TEST_SEED)


def test_output_shape_and_grid(batch):
    torch.manual_seed(0)
    model = CrossModalModel(CrossModalConfig())
    assert model.grid == (12, 12) and model.patch_size == 4
    assert model.grid[0] * model.patch_size == model.config.image_size  # the patches partition the image
    logits = model(batch.images, batch.query_ids)
    assert logits.shape == (8, len(ANSWERS)) and torch.isfinite(logits).all()
    small = CrossModalModel(CrossModalConfig(image_size=32, layers=1))
    assert small.grid == (8, 8)


def test_cross_attention_hooks(batch):
    torch.manual_seed(0)
    model = CrossModalModel().eval()
    with record(model, "*.hook_pattern") as trace:
        model(batch.images, batch.query_ids)
    names = [f"blocks.{i}.cross_attn.hook_pattern" for i in range(model.config.layers)]
    assert set(names) <= set(trace.keys())
    rows, cols = model.grid
    for name in names:
        pattern = trace[name]
        assert pattern.shape == (8, model.config.heads, batch.query_ids.shape[1], rows * cols)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]), atol=1e-5, rtol=0)  # fp32 sum
        assert trace.dims(name) == ("batch", "head", "query", "key")


def test_the_image_reaches_the_answer_only_through_cross_attention(batch):
    # zero every cross-attention value path: the answer must no longer depend on the image
    torch.manual_seed(0)
    model = CrossModalModel().eval()
    with torch.no_grad():
        for block in model.blocks:
            block.cross_attn.v_proj.weight.zero_()
    a = model(batch.images, batch.query_ids)
    b = model(torch.rand_like(batch.images), batch.query_ids)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("images, ids, error, word", [
    (torch.zeros(2, 3, 40, 40), torch.ones(2, 5, dtype=torch.long), ValueError, "images"),
    (torch.zeros(2, 3, 48, 48, dtype=torch.long), torch.ones(2, 5, dtype=torch.long), TypeError, "images"),
    (torch.zeros(2, 3, 48, 48), torch.ones(2, 5), TypeError, "query_ids"),
    (torch.zeros(2, 3, 48, 48), torch.ones(3, 5, dtype=torch.long), ValueError, "query_ids"),
    (torch.zeros(2, 3, 48, 48), torch.ones(2, 9, dtype=torch.long), ValueError, "query_ids"),
    (torch.zeros(2, 3, 48, 48), torch.full((2, 5), len(VOCAB), dtype=torch.long), ValueError, "query_ids"),
    (torch.zeros(2, 3, 48, 48), torch.zeros(2, 5, dtype=torch.long), ValueError, "query_ids"),
])
def test_bad_inputs(images, ids, error, word):
    with pytest.raises(error, match=word):
        CrossModalModel()(images, ids)


@pytest.mark.parametrize("kwargs, error, word", [
    ({"embed": 30, "heads": 4}, ValueError, "embed"),
    ({"image_size": 50}, ValueError, "image_size"),
    ({"layers": 0}, ValueError, "layers"),
    ({"layers": 1.0}, TypeError, "layers"),
])
def test_bad_config(kwargs, error, word):
    with pytest.raises(error, match=word):
        CrossModalConfig(**kwargs)


def test_shipped_weights_reach_the_card_accuracy_on_fresh_scenes():
    model, card = load_cross_modal()
    assert not model.training
    assert card["heldout_seed"] != TEST_SEED and card["answer_token"] == ANSWER_TOKEN
    n = 300
    test = sample_batch(n, seed=TEST_SEED)
    with torch.no_grad():
        accuracy = (model(test.images, test.query_ids).argmax(-1) == test.answers).float().mean().item()
    # binomial std of an accuracy p on 300 scenes: sqrt(p (1 - p) / 300) <= 0.017 for p >= 0.9, so the margin of
    # 0.05 is about 3 std (plus the card's own std on 1000 scenes, <= 0.01): a real regression, not noise, fails it
    std = math.sqrt(card["accuracy"] * (1 - card["accuracy"]) / n)
    assert std <= 0.02
    assert accuracy >= card["accuracy"] - 0.05, (accuracy, card["accuracy"])
    assert card["accuracy"] >= 0.9


def test_missing_weights_name_the_file_and_the_command(tmp_path):
    shutil.copy(default_cross_modal_dir() / "model_card.json", tmp_path / "model_card.json")
    with pytest.raises(FileNotFoundError) as info:
        load_cross_modal(tmp_path)
    assert "weights.safetensors" in str(info.value) and RETRAIN_COMMAND in str(info.value)


def test_corrupt_weights_name_the_file_and_the_command(tmp_path):
    shutil.copy(default_cross_modal_dir() / "model_card.json", tmp_path / "model_card.json")
    (tmp_path / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError) as info:
        load_cross_modal(tmp_path)
    assert "weights.safetensors" in str(info.value) and RETRAIN_COMMAND in str(info.value)


def test_corrupt_card_names_the_file_and_the_command(tmp_path):
    shutil.copy(default_cross_modal_dir() / "weights.safetensors", tmp_path / "weights.safetensors")
    (tmp_path / "model_card.json").write_text(json.dumps({"accuracy": 1.0}))
    with pytest.raises(ValueError) as info:
        load_cross_modal(tmp_path)
    assert "model_card.json" in str(info.value) and RETRAIN_COMMAND in str(info.value)
