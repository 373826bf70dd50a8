"""The first-drawing benchmark's pieces that need no JupyterLab: arguments, the composed text, the cell order, the
generated notebook and the summary (the run itself is a benchmark: ``make bench-bertviz``)."""

from __future__ import annotations

import pytest
import transformers

from explorer.bench import first_drawing as fd
from explorer.models.checkpoint import default_checkpoint_dir


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.BertTokenizerFast.from_pretrained(default_checkpoint_dir())


@pytest.mark.parametrize("n", [3, 32, 128, 512])
def test_composed_text_has_exactly_n_tokens(tokenizer, n):
    text = fd.compose_text(tokenizer, n)
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == n and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


@pytest.mark.parametrize("bad, error", [(2, ValueError), (513, ValueError), (True, TypeError), (32.0, TypeError)])
def test_composed_text_refuses_bad_lengths(tokenizer, bad, error):
    with pytest.raises(error, match="n_tokens"):
        fd.compose_text(tokenizer, bad)


def test_sides_alternate_and_the_notebook_holds_one_cell_each(tmp_path):
    kinds = fd.order(3)
    assert kinds == ["ours", "bertviz", "bertviz", "ours", "ours", "bertviz"]
    nb = fd.notebook("the cat", tmp_path, kinds)
    sources = [cell["source"] for cell in nb["cells"]]
    assert "TEXT = 'the cat'" in sources[0] and str(tmp_path) in sources[0]
    assert sources[1:] == [fd.CELLS[k] for k in kinds] and nb["nbformat"] == 4


def test_summary_keeps_the_first_apart():
    s = fd.summary([2.0, 0.5, None, 0.7, 0.6])
    assert (s["first_s"], s["median_s"], s["min_s"], s["max_s"], s["failed"]) == (2.0, 0.6, 0.5, 0.7, 1)
    assert fd.summary([1.0])["median_s"] is None


def test_arguments():
    args = fd.parse_args(["--bertviz", "x", "--tokens", "32", "128", "--repeats", "4"])
    assert (args.tokens, args.repeats, args.timeout) == ([32, 128], 4, 120.0)
    for bad in (["--repeats", "1"], ["--tokens", "2"], ["--timeout", "0"]):
        with pytest.raises(ValueError):
            fd.parse_args(["--bertviz", "x", *bad])
    with pytest.raises(SystemExit):
        fd.parse_args([])  # --bertviz is required
