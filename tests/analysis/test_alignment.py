"""Word timings from cross-attention (explorer.analysis.alignment) against independent references.

- :func:`dtw` against a brute-force enumeration of every monotone path (diagonal / down / right moves) on small
  random matrices: the returned path's cost equals the minimum to ``1e-12``; edge cases ``1 x F`` and ``T x 1``;
  the documented tie rule (diagonal first) on an all-zero matrix.
- :func:`median_filter` against ``scipy.ndimage.median_filter`` restricted to the last axis with ``mode="mirror"``
  (scipy's name for the padding that ``numpy.pad``/``torch.nn.functional.pad`` call "reflect", which Whisper uses;
  the padding equivalence is checked too): exact.
- a synthetic block-diagonal attention whose z-scored matrix is ``sqrt(T - 1)`` on the blocks and
  ``-1 / sqrt(T - 1)`` elsewhere: the minimum-cost path enters each token at its block's first frame (proof in
  :func:`test_block_diagonal_attention_gives_block_starts`), so the word times are known in closed form, for both
  space conventions (``"leading"``: a word starts at its leading space; ``"trailing"``: at its first letter).
- :func:`word_spans` / :func:`word_times` in closed form for both conventions; a bad ``space`` refused everywhere.
- :func:`uniform_split`, :func:`boundary_errors` and :func:`utterance_scores` on hand-computed cases.
- :func:`align_words` on a randomly initialised ``TinyWhisper`` (shapes, monotone times within the clip, eval mode
  restored) and its argument errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage, stats

from explorer.analysis.alignment import (
    FRAME_SECONDS, SPACES, WordAlignment, align_patterns, align_words, alignment_matrix, boundary_errors, choose_heads,
    cross_attention, dtw, head_table, median_filter, path_cost, summarise, token_jump_times, uniform_split,
    utterance_scores, word_spans, word_times,
)
from explorer.models.speech import TinyWhisper

EXACT = 1e-12

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# --- dtw --------------------------------------------------------------------------------------------------------


def _all_paths(n_tok: int, n_frame: int):
    """Every monotone path from (0, 0) to (n_tok - 1, n_frame - 1) with moves (1, 1), (1, 0), (0, 1)."""
    def walk(i, j, cells):
        if (i, j) == (n_tok - 1, n_frame - 1):
            yield cells
            return
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            if i + di < n_tok and j + dj < n_frame:
                yield from walk(i + di, j + dj, cells + [(i + di, j + dj)])
    yield from walk(0, 0, [(0, 0)])


def _brute_force_minimum(cost: np.ndarray) -> float:
    return min(sum(cost[i, j] for i, j in path) for path in _all_paths(*cost.shape))


def _check_path(path, n_tok, n_frame):
    tokens, frames = path
    assert tokens.dtype == np.int64 and frames.dtype == np.int64 and tokens.shape == frames.shape
    assert (tokens[0], frames[0]) == (0, 0) and (tokens[-1], frames[-1]) == (n_tok - 1, n_frame - 1)
    steps = set(zip(np.diff(tokens).tolist(), np.diff(frames).tolist()))
    assert steps <= {(1, 1), (1, 0), (0, 1)}


@pytest.mark.parametrize("shape", [(2, 2), (3, 4), (4, 3), (4, 5), (5, 5), (3, 6)])
def test_dtw_matches_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        cost = rng.normal(size=shape)
        path = dtw(cost)
        _check_path(path, *shape)
        assert abs(path_cost(cost, path) - _brute_force_minimum(cost)) <= EXACT


def test_dtw_edge_cases_and_ties():
    cost = np.random.default_rng(0).normal(size=(1, 6))
    tokens, frames = dtw(cost)
    assert tokens.tolist() == [0] * 6 and frames.tolist() == list(range(6))
    tokens, frames = dtw(cost.T)
    assert tokens.tolist() == list(range(6)) and frames.tolist() == [0] * 6
    assert [a.tolist() for a in dtw(np.ones((1, 1)))] == [[0], [0]]
    # ties: every path of an all-zero matrix costs 0; the backtrace prefers the diagonal
    assert [a.tolist() for a in dtw(np.zeros((3, 3)))] == [[0, 1, 2], [0, 1, 2]]
    assert [a.tolist() for a in dtw(np.zeros((2, 4)))] == [[0, 0, 0, 1], [0, 1, 2, 3]]
    # a torch tensor is accepted
    assert [a.tolist() for a in dtw(torch.zeros(2, 2))] == [[0, 1], [0, 1]]


@pytest.mark.parametrize("bad, error", [([[1.0, 2.0]], TypeError), (np.zeros(3), ValueError),
                                        (np.zeros((0, 3)), ValueError), (np.array([[np.nan, 1.0]]), ValueError),
                                        (np.zeros((2, 2), dtype=np.int64), TypeError)])
def test_dtw_bad_cost(bad, error):
    with pytest.raises(error, match="cost"):
        dtw(bad)


# --- median filter ----------------------------------------------------------------------------------------------


def test_reflect_padding_is_scipy_mirror():
    x = torch.arange(6.0)[None, None]
    torch_reflect = F.pad(x, (3, 3), mode="reflect")[0, 0].numpy()  # Whisper's padding
    assert np.array_equal(torch_reflect, np.pad(np.arange(6.0), 3, mode="reflect"))
    assert torch_reflect.tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 5, 4, 3, 2]


@pytest.mark.parametrize("width", [1, 3, 5, 7])
@pytest.mark.parametrize("length", [4, 5, 9, 30])
def test_median_filter_matches_scipy(width, length):
    x = np.random.default_rng(length * 10 + width).normal(size=(3, 2, length))
    if length <= width // 2:
        pytest.skip("too short to reflect")
    expected = ndimage.median_filter(x, size=(1, 1, width), mode="mirror")
    assert np.array_equal(median_filter(x, width), expected)
    assert np.array_equal(median_filter(torch.from_numpy(x), width), expected)


def test_median_filter_short_input_unchanged_and_errors():
    x = np.random.default_rng(0).normal(size=(2, 3))
    assert np.array_equal(median_filter(x, 7), x)  # 3 values <= 7 // 2: as Whisper, unchanged
    with pytest.raises(ValueError, match="width"):
        median_filter(x, 4)
    with pytest.raises(ValueError, match="width"):
        median_filter(x, 0)
    with pytest.raises(TypeError, match="width"):
        median_filter(x, 3.0)


# --- alignment matrix, tokens, words ----------------------------------------------------------------------------


def test_alignment_matrix_standardises_per_frame():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(12), size=(3, 5))  # (head, token, frame), rows sum to 1
    z = (p - p.mean(axis=1, keepdims=True)) / p.std(axis=1, keepdims=True)
    expected = ndimage.median_filter(z, size=(1, 1, 7), mode="mirror").mean(axis=0)
    assert np.allclose(alignment_matrix(p), expected, atol=EXACT, rtol=0)
    assert np.allclose(alignment_matrix(p, filter_width=1), z.mean(axis=0), atol=EXACT, rtol=0)
    # a frame every token attends to equally has std 0: its z-scores are 0, not NaN
    p[:, :, 4] = 0.2
    assert np.isfinite(alignment_matrix(p)).all()


def test_word_spans_and_times():
    assert word_spans("ab cd") == [(0, 2), (2, 5)]
    assert word_spans("  The  cat sat ") == [(0, 3), (3, 7), (7, 11)]  # cleaned to "the cat sat"
    assert word_spans("a") == [(0, 1)]
    starts, ends = word_times("ab cd", np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5]))
    assert starts.tolist() == [0.0, 0.2] and ends.tolist() == [0.2, 0.5]
    with pytest.raises(ValueError, match="jump_times"):
        word_times("ab cd", np.zeros(5))
    with pytest.raises(ValueError, match="text"):
        word_spans("   ")


def test_word_spans_and_times_trailing_space():
    """The space ends the preceding word: tokens a b ␣ c d <eot> (0..5) -> "ab" = [0, 3), "cd" = [3, 5)."""
    assert SPACES == ("leading", "trailing")
    assert word_spans("ab cd", "trailing") == [(0, 3), (3, 5)]
    assert word_spans("ab cd", space="leading") == word_spans("ab cd") == [(0, 2), (2, 5)]
    # "the cat sat": t h e ␣ c a t ␣ s a t <eot> (0..11)
    assert word_spans("  The  cat sat ", "trailing") == [(0, 4), (4, 8), (8, 11)]
    assert word_spans("a", "trailing") == word_spans("a") == [(0, 1)]
    jumps = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    starts, ends = word_times("ab cd", jumps, "trailing")
    assert starts.tolist() == [0.0, 0.3] and ends.tolist() == [0.3, 0.5]  # "cd" starts at c (token 3), not at ␣
    starts, ends = word_times("ab cd", jumps, space="leading")
    assert starts.tolist() == [0.0, 0.2] and ends.tolist() == [0.2, 0.5]
    # on any path the two readings share the first start and the last end; inner boundaries move from ␣ to the
    # next letter
    jumps = np.sort(np.random.default_rng(5).uniform(0, 2, size=len("the cat sat") + 1))
    lead, trail = word_times("the cat sat", jumps), word_times("the cat sat", jumps, "trailing")
    assert lead[0][0] == trail[0][0] == jumps[0] and lead[1][-1] == trail[1][-1] == jumps[-1]
    assert lead[0][1:].tolist() == jumps[[3, 7]].tolist() and trail[0][1:].tolist() == jumps[[4, 8]].tolist()
    for starts, ends in (lead, trail):
        assert np.array_equal(ends[:-1], starts[1:])


@pytest.mark.parametrize("bad", ["Leading", "before", "", None, 1])
def test_bad_space_refused(bad):
    with pytest.raises(ValueError, match="space"):
        word_spans("ab cd", bad)
    with pytest.raises(ValueError, match="space"):
        word_times("ab cd", np.zeros(6), bad)
    with pytest.raises(ValueError, match="space"):
        align_patterns(_block_patterns("ab", [4, 4, 4]), "ab", "all", space=bad)
    with pytest.raises(ValueError, match="space"):
        head_table([_block_patterns("ab", [4, 4, 4])], [("ab", [0.0], [0.16])], space=bad)


def test_token_jump_times():
    tokens = np.array([0, 0, 1, 1, 1, 2, 3])
    frames = np.array([0, 1, 1, 2, 3, 4, 4])
    assert np.allclose(token_jump_times(tokens, frames), [0.0, 0.02, 0.08, 0.08], atol=EXACT)
    assert np.allclose(token_jump_times(tokens, frames, frame_seconds=1.0), [0, 1, 4, 4])
    with pytest.raises(ValueError, match="token_idx"):
        token_jump_times(np.array([0, 2]), np.array([0, 1]))


def _block_patterns(text: str, lengths: list[int]) -> np.ndarray:
    """``[1, 1, token, frame]``: row k attends uniformly to its own block of ``lengths[k]`` frames."""
    assert len(lengths) == len(text) + 1
    p = np.zeros((1, 1, len(lengths), sum(lengths)))
    edges = np.concatenate([[0], np.cumsum(lengths)])
    for k in range(len(lengths)):
        p[0, 0, k, edges[k]:edges[k + 1]] = 1.0 / lengths[k]
    return p


def test_block_diagonal_attention_gives_block_starts():
    """Row k attends uniformly to block k (>= 4 frames). Per frame, one token has 1/L and T - 1 tokens 0, so the
    z-score is sqrt(T - 1) on the block and -1/sqrt(T - 1) off it, whatever L; the width-7 median filter keeps a
    plateau of >= 4 frames. On ``-matrix`` an in-block cell costs -sqrt(T - 1) and an off-block cell
    +1/sqrt(T - 1). A path visits every frame at least once and each frame has one in-block cell, so no path costs
    less than -F sqrt(T - 1); exactly one path reaches it: along each block, then diagonally from the last frame of
    block k to the first frame of block k + 1 (any down or right move off the blocks adds a positive cell). So
    token k's jump time is its block's first frame x 20 ms, and the path is unique (no tie rule involved)."""
    text = "ab cde fg"
    rng = np.random.default_rng(3)
    lengths = rng.integers(4, 9, size=len(text) + 1).tolist()
    block_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * FRAME_SECONDS
    a = align_patterns(_block_patterns(text, lengths), text, "all")
    assert a.space == "leading"
    n = len(text) + 1
    high, low = math.sqrt(n - 1), -1 / math.sqrt(n - 1)
    assert np.allclose(a.matrix, np.where(_block_patterns(text, lengths)[0, 0] > 0, high, low), atol=1e-12)
    # words: "ab" = tokens [0, 2), " cde" = [2, 6), " fg" = [6, 9), EOT = 9
    assert np.allclose(a.starts, block_starts[[0, 2, 6]], atol=EXACT)
    assert np.allclose(a.ends, block_starts[[2, 6, 9]], atol=EXACT)
    assert a.words == ["ab", "cde", "fg"] and a.tokens == list(text) + ["<eot>"]
    assert abs(path_cost(-a.matrix, a.path) - (-sum(lengths) * high)) <= 1e-9
    assert a.path[0].tolist() == np.repeat(np.arange(n), lengths).tolist()
    assert a.path[1].tolist() == list(range(sum(lengths)))
    # trailing space: "ab " = tokens [0, 3), "cde " = [3, 7), "fg" = [7, 9); the same path
    t = align_patterns(_block_patterns(text, lengths), text, "all", space="trailing")
    assert t.space == "trailing" and np.array_equal(t.matrix, a.matrix)
    assert all(np.array_equal(x, y) for x, y in zip(t.path, a.path))
    assert np.allclose(t.starts, block_starts[[0, 3, 7]], atol=EXACT)
    assert np.allclose(t.ends, block_starts[[3, 7, 9]], atol=EXACT)


def test_head_table_finds_the_aligned_head():
    text = "ab cde fg"
    truths, patterns = [], []
    rng = np.random.default_rng(4)
    for _ in range(3):
        lengths = rng.integers(4, 9, size=len(text) + 1).tolist()
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * FRAME_SECONDS
        p = rng.dirichlet(np.ones(sum(lengths)), size=(2, 3, len(text) + 1))  # noise heads
        p[1, 2] = _block_patterns(text, lengths)[0, 0]                       # the aligned head: (1, 2)
        patterns.append(p)
        truths.append((text, starts[[0, 2, 6]], starts[[2, 6, 9]]))
    table = head_table(patterns, truths)
    assert [(r["layer"], r["head"]) for r in table] == [(l, h) for l in range(2) for h in range(3)]
    # scored against the leading-space truth, the aligned head is perfect only with the leading convention
    trailing = head_table(patterns, truths, space="trailing")
    assert trailing[5]["mae_ms"]["mean"] > 0
    best = table[5]
    assert best["mae_ms"]["mean"] == 0.0 and best["f1_50"]["mean"] == 1.0 and best["f1_100"]["mean"] == 1.0
    assert choose_heads(table, 1) == [(1, 2)]
    assert len(choose_heads(table, 6)) == 6
    with pytest.raises(ValueError, match="k"):
        choose_heads(table, 7)
    with pytest.raises(ValueError, match="truths"):
        head_table(patterns, truths[:2])


# --- metrics ----------------------------------------------------------------------------------------------------


def test_uniform_split_closed_form():
    starts, ends = uniform_split(["ab", "cdef"], 1.0, 4.0)  # 6 letters over 3 s: 0.5 s a letter
    assert np.allclose(starts, [1.0, 2.0], atol=EXACT) and np.allclose(ends, [2.0, 4.0], atol=EXACT)
    starts, ends = uniform_split(["abc", "d", "ef"], 0.0, 0.6)
    assert np.allclose(starts, [0.0, 0.3, 0.4], atol=EXACT) and np.allclose(ends, [0.3, 0.4, 0.6], atol=EXACT)
    with pytest.raises(ValueError, match="speech_end"):
        uniform_split(["a"], 1.0, 0.5)
    with pytest.raises(TypeError, match="words"):
        uniform_split("ab", 0.0, 1.0)


def test_boundary_errors_and_scores_closed_form():
    pred_starts, pred_ends = [0.0, 0.5], [0.5, 1.0]
    true_starts, true_ends = [0.04, 0.44], [0.44, 1.2]
    errors = boundary_errors(pred_starts, pred_ends, true_starts, true_ends)
    assert np.allclose(errors, [0.04, 0.06, 0.06, 0.2], atol=EXACT)
    scores = utterance_scores(pred_starts, pred_ends, true_starts, true_ends)
    assert scores.keys() == {"mae_ms", "f1_50", "f1_100"}
    assert abs(scores["mae_ms"] - 90.0) <= 1e-9 and scores["f1_50"] == 0.25 and scores["f1_100"] == 0.75
    # a boundary exactly at the tolerance counts as a hit (float rounding of 0.35 - 0.3 allowed for)
    assert utterance_scores([0.35], [1.0], [0.3], [1.0])["f1_50"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        boundary_errors([0.0], [1.0], [0.0, 1.0], [1.0, 2.0])


def test_summarise_is_the_t_interval():
    values = [10.0, 12.0, 17.0, 11.0]
    s = summarise(values)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert abs(s["mean"] - 12.5) <= EXACT and np.allclose(s["ci95"], [low, high], atol=1e-10)


# --- the model --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyWhisper()


def test_align_words_on_random_model(model):
    mel = torch.randn(80, 151)  # 76 encoder frames
    model.train()
    a = align_words(model, mel, "green apple  river", heads=[(0, 1), (1, 3)])
    assert model.training  # restored
    assert isinstance(a, WordAlignment) and a.words == ["green", "apple", "river"]
    n_tok, n_frame = len("green apple river") + 1, 76
    assert a.patterns.shape == (2, 4, n_tok, n_frame) and a.patterns.dtype == np.float32
    assert np.allclose(a.patterns.sum(-1), 1.0, atol=1e-5)
    assert a.matrix.shape == (n_tok, n_frame) and len(a.tokens) == n_tok and a.heads == [(0, 1), (1, 3)]
    _check_path(a.path, n_tok, n_frame)
    assert a.starts.shape == a.ends.shape == (3,)
    assert np.all(np.diff(a.starts) >= 0) and np.all(a.starts <= a.ends)
    assert np.array_equal(a.ends[:-1], a.starts[1:])
    assert a.starts[0] == 0.0 and a.ends[-1] <= (n_frame - 1) * FRAME_SECONDS + EXACT
    # the same from recorded patterns, and "all" = every head listed
    again = align_patterns(cross_attention(model, mel, "green apple river"), "green apple river", [(0, 1), (1, 3)])
    assert np.array_equal(again.starts, a.starts) and np.array_equal(again.matrix, a.matrix)
    every = [(l, h) for l in range(2) for h in range(4)]
    assert np.array_equal(align_words(model, mel, "green apple river").matrix,
                          align_words(model, mel, "green apple river", heads=every).matrix)
    # the trailing-space reading of the same path: inner boundaries at the next word's first letter
    assert a.space == "leading"
    t = align_words(model, mel, "green apple river", heads=[(0, 1), (1, 3)], space="trailing")
    assert t.space == "trailing" and t.heads == a.heads and np.array_equal(t.matrix, a.matrix)
    jumps = token_jump_times(*a.path)
    assert np.array_equal(t.starts, jumps[[0, 6, 12]]) and np.array_equal(t.ends, jumps[[6, 12, 17]])
    assert np.array_equal(a.starts, jumps[[0, 5, 11]]) and np.array_equal(a.ends, jumps[[5, 11, 17]])


@pytest.mark.parametrize("kwargs, error, name", [
    ({"text": ""}, ValueError, "text"),
    ({"text": "   "}, ValueError, "text"),
    ({"text": "hello world!"}, ValueError, "text"),
    ({"text": "ab " * 40}, ValueError, "text"),
    ({"text": 5}, TypeError, "text"),
    ({"heads": [(2, 0)]}, ValueError, "heads"),
    ({"heads": [(0, 4)]}, ValueError, "heads"),
    ({"heads": [(0, 1), (0, 1)]}, ValueError, "heads"),
    ({"heads": []}, TypeError, "heads"),
    ({"heads": "some"}, ValueError, "heads"),
    ({"heads": [(0, 1.0)]}, TypeError, "heads"),
    ({"mel": torch.randn(1, 80, 50)}, ValueError, "mel"),
    ({"mel": torch.randn(40, 50)}, ValueError, "mel"),
    ({"mel": torch.zeros(80, 50, dtype=torch.long)}, TypeError, "mel"),
    ({"mel": [[0.0]]}, TypeError, "mel"),
    ({"mel": torch.randn(80, 1000)}, ValueError, "mel"),
    ({"filter_width": 6}, ValueError, "filter_width"),
    ({"space": "after"}, ValueError, "space"),
    ({"space": None}, ValueError, "space"),
])
def test_align_words_bad_input(model, kwargs, error, name):
    args = {"mel": torch.randn(80, 60), "text": "green apple", "heads": "all", "filter_width": 7,
            "space": "leading"} | kwargs
    with pytest.raises(error, match=name):
        align_words(model, **args)
