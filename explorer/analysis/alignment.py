"""Word timings from cross-attention: Whisper's recipe (``whisper/timing.py``), reimplemented, plus its metrics.

A speech recogniser with an encoder-decoder layout (Whisper; :class:`explorer.models.speech.TinyWhisper`) reads the
audio through cross-attention: every decoder query row holds a distribution over the encoder frames. Some heads look
at the frames where the token they predict is spoken, so a path through those rows from the first to the last token
gives each token a time. Whisper (Radford et al. 2022, word timestamps added in openai/whisper v20230314) does this:

1. **Teacher forcing.** Run the decoder once on the known text and record the cross-attention of chosen *alignment
   heads*; keep only the valid (non-padding) frames.
2. **Standardise** each head's attention per frame across the tokens (z-score over the token axis, population
   standard deviation), so that a frame counts for the token that attends to it *more than the other tokens do*.
3. **Median filter** each token's row along the frames (width 7, reflect padding): removes single-frame spikes.
4. **Average** the heads: a ``[token, frame]`` matrix (:func:`alignment_matrix`).
5. **Dynamic time warping** on ``-matrix`` (:func:`dtw`): the monotone path from the first token at the first frame
   to the last token at the last frame that collects the most standardised attention.
6. **Times.** A token's time is the first frame the path spends on it (:func:`token_jump_times`); a word starts at
   its first token's time and ends at the next word's first token's time (:func:`word_spans`), the last word at
   EOT's time.

Row convention (as Whisper's ``matrix[len(sot_sequence):-1]``). The decoder input is ``[SOT, c_1 .. c_n]``; its
``n + 1`` query rows *predict* ``c_1 .. c_n, EOT``. Row ``k`` is the alignment row of token ``k`` of
``c_1 .. c_n, EOT`` (0-based), i.e. of the token it predicts.

**Which word owns the space** (``space``). Whisper's BPE tokens carry their leading space (``" word"``), so the
space between two words is part of the following word. Here the tokens are characters and the space is a token of
its own, so its owner is a choice; :data:`SPACES` holds the two readings, and EOT (token ``n``) closes the last word
in both. ``"ab cd"`` has tokens ``a b ␣ c d <eot>`` (0..5):

- ``space="leading"`` (Whisper's ``" word"`` convention, the default): word 0 owns its characters, word ``w > 0``
  its leading space and its characters. ``"ab cd"``: word 0 = tokens ``[0, 2)`` (``a b``), word 1 = ``[2, 5)``
  (``␣ c d``); word 0 starts at token 0's time and ends at the space's (token 2), word 1 starts at the space's time
  and ends at EOT's (token 5).
- ``space="trailing"``: the space ends the preceding word; every word starts at its first letter. ``"ab cd"``:
  word 0 = tokens ``[0, 3)`` (``a b ␣``), word 1 = ``[3, 5)`` (``c d``); word 0 starts at token 0's time and ends at
  ``c``'s (token 3), word 1 starts at ``c``'s time and ends at EOT's (token 5).

Either way a word's end is the next word's start (the last word's end is EOT's time); the two readings differ only
in the inner boundaries, which fall on the space's jump time (leading) or on the next letter's (trailing).
:mod:`explorer.analysis.speech_study` chooses between them on validation voices, together with the heads and the
median-filter width.

:func:`align_words` runs all of it on one clip and returns a :class:`WordAlignment`; :func:`align_patterns` does
steps 2-6 on recorded patterns (so that many head choices can be scored from one forward pass).

**Metrics** (:func:`boundary_errors`, :func:`utterance_scores`): with forced alignment (the true text), every true
word has exactly one predicted span, so the 2·n predicted boundaries pair one to one with the true ones; a boundary
is a hit when its absolute error is within the tolerance (50 or 100 ms). Precision = recall = the hit share, hence
F1 = the hit share. MAE is the mean absolute boundary error in ms. :func:`uniform_split` is the baseline that
spreads the words over the true speech span in proportion to their letters. :func:`head_table` scores every head
alone on a set of utterances; :func:`choose_heads` takes the ``k`` best.

Reference: Whisper's ``timing.py`` (openai/whisper: ``find_alignment``, ``dtw``, ``median_filter``, and the
per-model ``alignment_heads`` masks that pick the heads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from explorer._checks import check_int, check_real, check_type, describe
from explorer.analysis.agreement import interval

__all__ = [
    "FRAME_SECONDS", "FILTER_WIDTH", "TOLERANCES", "SPACES", "SPACE", "WordAlignment", "dtw", "path_cost",
    "median_filter", "alignment_matrix", "token_jump_times", "word_spans", "word_times", "align_patterns",
    "align_words", "cross_attention", "boundary_errors", "utterance_scores", "uniform_split", "summarise",
    "head_table", "choose_heads", "all_heads", "check_heads",
]

FRAME_SECONDS = 0.02      # one encoder frame of TinyWhisper (and Whisper): 10 ms mel hop x conv stride 2
FILTER_WIDTH = 7          # Whisper's medfilt_width
TOLERANCES = (0.05, 0.1)  # seconds: F1@50 ms, F1@100 ms
SPACES = ("leading", "trailing")  # which word owns the space between two words (module docstring)
SPACE = "leading"         # Whisper's " word" convention
_EPS = 1e-9               # a boundary error within tolerance + 1e-9 s is a hit (float rounding of the times)

# moves into cell (i, j), in the tie order of the backtrace: diagonal from (i-1, j-1), down from (i-1, j),
# right from (i, j-1)
_DIAGONAL, _DOWN, _RIGHT = 0, 1, 2


# --- the path ---------------------------------------------------------------------------------------------------


def _as_float_array(name: str, value: object, ndim: int, dims: str) -> np.ndarray:
    """``value`` (numpy array or tensor) as a float64 array of ``ndim`` dims, non-empty and finite."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point array {dims}, got dtype {value.dtype}")
        value = value.detach().cpu().double().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch.Tensor {dims}, got {describe(value)}")
    if not np.issubdtype(value.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array {dims}, got dtype {value.dtype}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must have shape {dims} ({ndim} dims), got shape {value.shape}")
    if value.size == 0:
        raise ValueError(f"{name} must not be empty {dims}, got shape {value.shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} must be finite {dims}")
    return value.astype(np.float64, copy=False)


def dtw(cost: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotone path through ``cost`` (dynamic time warping, as Whisper's ``dtw``).

    The path starts at ``(0, 0)``, ends at ``(T - 1, F - 1)`` and moves diagonally ``(+1, +1)``, down ``(+1, 0)``
    (next token, same frame) or right ``(0, +1)`` (same token, next frame); its cost is the sum of ``cost`` over
    every cell it visits. ``D[i, j] = cost[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])`` is filled one
    anti-diagonal at a time (each anti-diagonal needs only the two before it), in float64.

    Tie rule: where two moves into a cell give the same minimum, the backtrace prefers the diagonal, then down, then
    right (``numpy.argmin`` over ``[diagonal, down, right]`` takes the first). Whisper's ``dtw_cpu`` compares with
    strict ``<`` and falls through to *right* on any tie. Both return a minimum-cost path; they can differ only on
    exact ties, which real attention never produces.

    Args:
        cost: ``[token, frame]`` float (numpy or torch), finite, non-empty.

    Returns:
        ``(token_indices, frame_indices)``, two int64 arrays of the same length ``L``
        (``max(T, F) <= L <= T + F - 1``), the path's cells in order.

    Raises:
        TypeError / ValueError: ``cost`` is not a 2-D finite float array.
    """
    x = _as_float_array("cost", cost, 2, "[token, frame]")
    n_tok, n_frame = x.shape
    total = np.full((n_tok + 1, n_frame + 1), np.inf)  # D, shifted by one: row/column 0 is the border
    total[0, 0] = 0.0
    move = np.zeros((n_tok + 1, n_frame + 1), dtype=np.int8)
    for s in range(2, n_tok + n_frame + 1):  # anti-diagonal i + j = s over 1-based cells
        i = np.arange(max(1, s - n_frame), min(n_tok, s - 1) + 1)
        j = s - i
        options = np.stack([total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]])  # (3, cells)
        best = np.argmin(options, axis=0)
        total[i, j] = x[i - 1, j - 1] + options[best, np.arange(len(i))]
        move[i, j] = best
    tokens, frames = [n_tok - 1], [n_frame - 1]
    i, j = n_tok, n_frame
    while (i, j) != (1, 1):
        step = move[i, j]
        if step == _DIAGONAL:
            i, j = i - 1, j - 1
        elif step == _DOWN:
            i -= 1
        else:
            j -= 1
        tokens.append(i - 1)
        frames.append(j - 1)
    return np.asarray(tokens[::-1], dtype=np.int64), np.asarray(frames[::-1], dtype=np.int64)


def path_cost(cost: np.ndarray | torch.Tensor, path: tuple[np.ndarray, np.ndarray]) -> float:
    """Sum of ``cost`` ``[token, frame]`` over the cells of ``path`` = ``(token_indices, frame_indices)``."""
    x = _as_float_array("cost", cost, 2, "[token, frame]")
    return float(x[path[0], path[1]].sum())


def median_filter(x: np.ndarray | torch.Tensor, width: int = FILTER_WIDTH) -> np.ndarray:
    """Running median along the last axis with reflect padding, as Whisper's ``median_filter``.

    Each value becomes the median of the ``width`` values centred on it; the ends are padded by reflection *without*
    repeating the edge value (``torch.nn.functional.pad(mode="reflect")`` = ``numpy.pad(mode="reflect")`` =
    ``scipy.ndimage``'s ``mode="mirror"``: ``c b | a b c d | c b``; note that ``scipy.ndimage``'s own
    ``mode="reflect"`` repeats the edge, ``b a | a b c d | d c``). As in Whisper, a last axis of at most
    ``width // 2`` values is returned unchanged (reflection needs more values than the padding).

    Args:
        x: ``[..., frame]`` float array (numpy or torch), finite.
        width: odd window length >= 1 (Whisper: 7).

    Returns:
        float64 numpy array of ``x``'s shape.
    """
    width = check_int("width", width, 1, note="odd window length")
    if width % 2 == 0:
        raise ValueError(f"width must be an odd int >= 1 (odd window length), got {width}")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating) or x.ndim == 0:
        raise TypeError(f"x must be a float array [..., frame], got {describe(x)}")
    x = x.astype(np.float64)
    half = width // 2
    if x.shape[-1] <= half:
        return x.copy()
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)  # (..., frame, width)
    return np.sort(windows, axis=-1)[..., half]


def alignment_matrix(patterns: np.ndarray | torch.Tensor, filter_width: int = FILTER_WIDTH) -> np.ndarray:
    """Whisper's token-by-frame alignment matrix from the cross-attention of the chosen heads.

    Per head: standardise every frame (column) across the tokens (mean and population standard deviation over the
    token axis; a column whose std is 0 becomes 0), median-filter every token's row along the frames
    (:func:`median_filter`), then average over the heads.

    Args:
        patterns: ``[head, token, frame]`` float: cross-attention rows (softmaxed over the frames, valid frames
            only) of the selected heads, stacked; ``token`` rows follow the row convention of the module docstring.
        filter_width: median filter width (odd, Whisper: 7).

    Returns:
        ``[token, frame]`` float64: high where a token attends to a frame more than the other tokens do.
        :func:`dtw` of ``-matrix`` is the alignment path.
    """
    p = _as_float_array("patterns", patterns, 3, "[head, token, frame]")
    mean = p.mean(axis=1, keepdims=True)
    std = p.std(axis=1, keepdims=True)  # population std (ddof=0), as torch.std_mean(unbiased=False)
    z = np.divide(p - mean, std, out=np.zeros_like(p), where=std > 0)
    return median_filter(z, filter_width).mean(axis=0)


# --- tokens, words, times ---------------------------------------------------------------------------------------


def token_jump_times(token_idx: np.ndarray, frame_idx: np.ndarray,
                     frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """Time of each token: the first frame the path spends on it, times ``frame_seconds``.

    Args:
        token_idx, frame_idx: the path from :func:`dtw` (``token_idx`` starts at 0 and grows by 0 or 1 per step).
        frame_seconds: seconds per frame (0.02 for TinyWhisper's and Whisper's encoder frames).

    Returns:
        ``[token]`` float64 seconds, one per token ``0 .. token_idx[-1]`` (non-decreasing).
    """
    token_idx, frame_idx = np.asarray(token_idx), np.asarray(frame_idx)
    if token_idx.ndim != 1 or token_idx.shape != frame_idx.shape or token_idx.size == 0:
        raise ValueError(f"token_idx and frame_idx must be 1-D paths of the same non-zero length, got shapes "
                         f"{token_idx.shape} and {frame_idx.shape}")
    steps = np.diff(token_idx)
    if token_idx[0] != 0 or ((steps != 0) & (steps != 1)).any():
        raise ValueError("token_idx must start at 0 and grow by 0 or 1 per step (a dtw path)")
    frame_seconds = check_real("frame_seconds", frame_seconds, 0, low_open=True, finite=True)
    jumps = np.concatenate([[True], steps == 1])  # first cell of each token
    return frame_idx[jumps].astype(np.float64) * frame_seconds


def _clean(text: object) -> str:
    check_type("text", text, str, "a str")
    clean = " ".join(text.lower().split())  # as explorer.models.speech.encode_text
    if not clean:
        raise ValueError("text must contain at least one word, got an empty string")
    return clean


def _check_space(space: object) -> str:
    if not isinstance(space, str) or space not in SPACES:
        raise ValueError(f"space must be one of {SPACES} (which word owns the space between two words: "
                         f"'leading' = the following one, Whisper's \" word\"; 'trailing' = the preceding one), "
                         f"got {space!r}")
    return space


def word_spans(text: str, space: str = SPACE) -> list[tuple[int, int]]:
    """Each word's tokens ``[first, end)`` in the row convention of the module docstring.

    Tokens are the characters of the cleaned text (lower case, single spaces) followed by EOT. ``space="leading"``
    (Whisper's ``" word"``): word 0 owns its characters, word ``w > 0`` its leading space and its characters.
    ``space="trailing"``: every word but the last owns its characters and the space after them, the last word its
    characters. ``end`` is the next word's first token, or EOT's index (the text's length) for the last word.
    ``word_spans("ab cd") == [(0, 2), (2, 5)]``; ``word_spans("ab cd", "trailing") == [(0, 3), (3, 5)]``.

    Raises:
        ValueError: ``space`` is not one of :data:`SPACES`; ``text`` is empty.
    """
    space = _check_space(space)
    clean = _clean(text)
    words = clean.split(" ")
    spans, first = [], 0
    for w, word in enumerate(words):
        if space == "leading":
            end = first + len(word) + (w > 0)
        else:
            end = first + len(word) + (w < len(words) - 1)
        spans.append((first, end))
        first = end
    return spans


def word_times(text: str, jump_times: np.ndarray, space: str = SPACE) -> tuple[np.ndarray, np.ndarray]:
    """Word starts and ends (seconds) from the tokens' jump times ``[len(text) + 1]`` (characters and EOT): a word
    starts at the jump time of its first token and ends at the jump time of its ``end`` token (:func:`word_spans`
    with ``space``)."""
    spans = word_spans(text, space)
    jump_times = np.asarray(jump_times, dtype=np.float64)
    if jump_times.shape != (spans[-1][1] + 1,):
        raise ValueError(f"jump_times must hold one time per character and EOT ({spans[-1][1] + 1}), got shape "
                         f"{jump_times.shape}")
    return (np.array([jump_times[a] for a, _ in spans]), np.array([jump_times[b] for _, b in spans]))


# --- heads ------------------------------------------------------------------------------------------------------


def all_heads(layers: int, heads: int) -> list[tuple[int, int]]:
    """Every ``(layer, head)`` pair, layer-major."""
    return [(layer, head) for layer in range(layers) for head in range(heads)]


def check_heads(heads: object, layers: int, n_heads: int) -> list[tuple[int, int]]:
    """``heads`` as a list of ``(layer, head)`` pairs: ``"all"`` or a non-empty list of distinct in-range pairs.

    Raises:
        TypeError / ValueError naming ``heads``.
    """
    if isinstance(heads, str):
        if heads != "all":
            raise ValueError(f"heads must be 'all' or a list of (layer, head) pairs, got {heads!r}")
        return all_heads(layers, n_heads)
    if not isinstance(heads, (list, tuple)) or not heads:
        raise TypeError(f"heads must be 'all' or a non-empty list of (layer, head) pairs, got {describe(heads)}")
    out = []
    for pair in heads:
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)):
            raise TypeError(f"heads must hold (layer, head) pairs of ints, got {pair!r}")
        layer, head = int(pair[0]), int(pair[1])
        if not (0 <= layer < layers and 0 <= head < n_heads):
            raise ValueError(f"heads: ({layer}, {head}) is out of range; the model has {layers} decoder layers "
                             f"x {n_heads} heads (layer in [0, {layers - 1}], head in [0, {n_heads - 1}])")
        out.append((layer, head))
    if len(set(out)) != len(out):
        raise ValueError(f"heads must not repeat a (layer, head) pair, got {out}")
    return out


# --- one clip ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class WordAlignment:
    """Word times of one clip from cross-attention (see the module docstring).

    Attributes:
        words: the words of the cleaned text.
        starts, ends: ``[word]`` float64 seconds.
        matrix: ``[token, frame]`` alignment matrix (:func:`alignment_matrix` of the chosen heads).
        path: ``(token_idx, frame_idx)``, the :func:`dtw` path through ``-matrix``.
        patterns: ``[layer, head, token, frame]`` float32: every cross-attention head, valid frames only.
        tokens: the ``token`` axis: the characters of the text, then ``"<eot>"`` (the tokens the rows predict).
        heads: the ``(layer, head)`` pairs averaged into ``matrix``.
        space: which word owns the space between two words, ``"leading"`` or ``"trailing"`` (module docstring).
    """

    words: list[str]
    starts: np.ndarray
    ends: np.ndarray
    matrix: np.ndarray
    path: tuple[np.ndarray, np.ndarray]
    patterns: np.ndarray
    tokens: list[str]
    heads: list[tuple[int, int]]
    space: str = SPACE


def align_patterns(patterns: np.ndarray | torch.Tensor, text: str, heads: object = "all",
                   filter_width: int = FILTER_WIDTH, frame_seconds: float = FRAME_SECONDS,
                   space: str = SPACE) -> WordAlignment:
    """Steps 2-6 of the recipe on recorded cross-attention: word times of ``text``.

    Args:
        patterns: ``[layer, head, token, frame]`` float, ``token = len(cleaned text) + 1`` (rows of the decoder
            input ``[SOT, c_1 .. c_n]``), valid frames only.
        text: the transcript that was teacher-forced.
        heads: ``"all"`` or a list of ``(layer, head)`` pairs to average.
        filter_width: median filter width (odd).
        frame_seconds: seconds per frame.
        space: ``"leading"`` (Whisper's ``" word"``: the space starts the following word) or ``"trailing"`` (the
            space ends the preceding word); module docstring.

    Returns:
        A :class:`WordAlignment`.
    """
    space = _check_space(space)
    p = _as_float_array("patterns", patterns, 4, "[layer, head, token, frame]")
    clean = _clean(text)
    if p.shape[2] != len(clean) + 1:
        raise ValueError(f"patterns has {p.shape[2]} token rows; text {clean!r} needs {len(clean) + 1} "
                         "(one per character and EOT)")
    chosen = check_heads(heads, p.shape[0], p.shape[1])
    matrix = alignment_matrix(np.stack([p[layer, head] for layer, head in chosen]), filter_width)
    path = dtw(-matrix)
    starts, ends = word_times(clean, token_jump_times(*path, frame_seconds=frame_seconds), space)
    return WordAlignment(clean.split(" "), starts, ends, matrix, path, p.astype(np.float32),
                         list(clean) + ["<eot>"], chosen, space)


def _check_mel(mel: object, n_mels: int) -> torch.Tensor:
    if isinstance(mel, np.ndarray):
        mel = torch.from_numpy(mel)
    if not isinstance(mel, torch.Tensor):
        raise TypeError(f"mel must be a float tensor [{n_mels}, frame] (one clip), got {describe(mel)}")
    if not mel.is_floating_point():
        raise TypeError(f"mel must be a float tensor [{n_mels}, frame] (one clip), got dtype {mel.dtype}")
    if mel.ndim != 2 or mel.shape[0] != n_mels or mel.shape[1] == 0:
        raise ValueError(f"mel must have shape [{n_mels}, frame] (one clip, frame >= 1), got {tuple(mel.shape)}")
    return mel.to(torch.float32)


def cross_attention(model: torch.nn.Module, mel: torch.Tensor, text: str) -> np.ndarray:
    """Teacher-forced cross-attention of every decoder head: ``[layer, head, token, frame]`` float32.

    Runs ``model`` (a :class:`~explorer.models.speech.TinyWhisper`) once on ``mel`` ``[n_mels, frame]`` and the
    decoder input ``[SOT, c_1 .. c_n]`` under :func:`explorer.hooks.record`, in eval mode (restored afterwards) and
    without gradients. ``token = n + 1``; ``frame`` = the clip's encoder frames (all valid: one clip, no padding).
    """
    from explorer.hooks import record
    from explorer.models.speech import SOT, TinyWhisper, encode_text

    check_type("model", model, TinyWhisper, "a TinyWhisper")
    mel = _check_mel(mel, model.config.n_mels)
    ids = encode_text(text, model.config.max_text)
    tokens = torch.tensor([[SOT] + ids], dtype=torch.long)
    names = [f"decoder.{i}.cross_attn.hook_pattern" for i in range(model.config.decoder_layers)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), record(model, names) as trace:
            audio, padding = model.encode(mel[None])
            model.decode(tokens, audio, padding)
    finally:
        model.train(was_training)
    return torch.stack([trace[name][0] for name in names]).float().numpy()  # (layer, head, token, frame)


def align_words(model: torch.nn.Module, mel: torch.Tensor, text: str, heads: object = "all",
                filter_width: int = FILTER_WIDTH, space: str = SPACE) -> WordAlignment:
    """Word times of ``text`` in one clip from the model's cross-attention (Whisper's recipe, module docstring).

    Args:
        model: a :class:`~explorer.models.speech.TinyWhisper` (put in eval mode for the pass, then restored).
        mel: ``[n_mels, frame]`` log-mel of one clip (:func:`explorer.data.speech.log_mel`).
        text: the transcript (a-z and spaces, at most ``model.config.max_text`` characters).
        heads: ``"all"`` or a list of ``(layer, head)`` decoder cross-attention heads to average.
        filter_width: median filter width (odd, Whisper: 7).
        space: ``"leading"`` (Whisper's ``" word"``, the default) or ``"trailing"``: which word owns the space
            between two words (module docstring). The study's choice of all three:
            ``align_words(model, mel, text, **explorer.analysis.speech_study.chosen_setting())``.

    Returns:
        A :class:`WordAlignment` (times in seconds from the start of the clip, 20 ms frames).

    Raises:
        TypeError / ValueError naming the argument: ``mel`` not a float ``[n_mels, frame]`` tensor or too long for
        the model; ``text`` empty, too long or with characters outside a-z and space; ``heads`` not ``"all"`` or
        pairs in range; ``filter_width`` not an odd int >= 1; ``space`` not ``"leading"`` or ``"trailing"``.
    """
    from explorer.models.speech import FRAME_SECONDS as frame_seconds, TinyWhisper

    check_type("model", model, TinyWhisper, "a TinyWhisper")
    check_heads(heads, model.config.decoder_layers, model.config.heads)  # fail before running the model
    filter_width = check_int("filter_width", filter_width, 1)
    if filter_width % 2 == 0:
        raise ValueError(f"filter_width must be an odd int >= 1, got {filter_width}")
    space = _check_space(space)
    patterns = cross_attention(model, mel, text)
    return align_patterns(patterns, text, heads, filter_width, frame_seconds, space)


# --- metrics ----------------------------------------------------------------------------------------------------


def _vector(name: str, value: object) -> np.ndarray:
    x = np.asarray(value, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"{name} must be a non-empty 1-D array of finite seconds, got shape {x.shape}")
    return x


def boundary_errors(pred_starts: Sequence[float], pred_ends: Sequence[float], true_starts: Sequence[float],
                    true_ends: Sequence[float]) -> np.ndarray:
    """Absolute errors of all ``2 n`` word boundaries, seconds: ``|pred_starts - true_starts|`` then the ends.

    All four arguments are ``[word]`` seconds of the same length ``n``; returns ``[2 n]`` float64.
    """
    arrays = [_vector(name, v) for name, v in (("pred_starts", pred_starts), ("pred_ends", pred_ends),
                                               ("true_starts", true_starts), ("true_ends", true_ends))]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"pred_starts, pred_ends, true_starts and true_ends must have the same length, got "
                         f"{[a.size for a in arrays]}")
    ps, pe, ts, te = arrays
    return np.abs(np.concatenate([ps - ts, pe - te]))


def utterance_scores(pred_starts: Sequence[float], pred_ends: Sequence[float], true_starts: Sequence[float],
                     true_ends: Sequence[float], tolerances: Sequence[float] = TOLERANCES) -> dict[str, float]:
    """MAE (ms) and F1 at each tolerance of one utterance's word boundaries.

    With forced alignment every true word has exactly one predicted span, so the ``2 n`` boundaries pair one to one:
    precision = recall = the share of boundaries whose absolute error is within the tolerance (``<= tol``, with
    1e-9 s of slack for float rounding), and F1 equals that share.

    Returns:
        ``{"mae_ms": mean absolute boundary error in ms, "f1_50": share within 50 ms, "f1_100": share within
        100 ms}`` (keys ``f1_{ms}`` for other ``tolerances``; shares in [0, 1]).
    """
    errors = boundary_errors(pred_starts, pred_ends, true_starts, true_ends)
    out = {"mae_ms": float(errors.mean() * 1000.0)}
    for tol in tolerances:
        tol = check_real("tolerances", tol, 0, finite=True)
        out[f"f1_{round(tol * 1000)}"] = float(np.mean(errors <= tol + _EPS))
    return out


def uniform_split(words: Sequence[str], speech_start: float, speech_end: float) -> tuple[np.ndarray, np.ndarray]:
    """Baseline word times: ``[speech_start, speech_end]`` cut in proportion to each word's letter count.

    In the study the span is the *true* first word start and last word end, so the baseline is given the two
    outer boundaries exactly and only has to place the inner ones: a generous baseline.

    Returns:
        ``(starts, ends)`` ``[word]`` float64 seconds; word ``w`` spans
        ``start + (end - start) * [sum(len[:w]), sum(len[:w+1])] / sum(len)``.
    """
    if isinstance(words, str) or not isinstance(words, (list, tuple)) or not words:
        raise TypeError(f"words must be a non-empty list of str, got {describe(words)}")
    if not all(isinstance(w, str) and w for w in words):
        raise ValueError("words must hold non-empty strings")
    speech_start = check_real("speech_start", speech_start, finite=True)
    speech_end = check_real("speech_end", speech_end, speech_start, finite=True, note="seconds, >= speech_start")
    edges = np.concatenate([[0.0], np.cumsum([len(w) for w in words], dtype=np.float64)])
    cuts = speech_start + (speech_end - speech_start) * edges / edges[-1]
    cuts[-1] = speech_end
    return cuts[:-1], cuts[1:]


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Mean with the two-sided 95 % Student-t interval over ``values`` (:func:`explorer.analysis.agreement.interval`):
    ``{"mean", "std", "ci95": [low, high], "n"}``."""
    return interval(list(values))


# --- per head ---------------------------------------------------------------------------------------------------


def _truth(item: object) -> tuple[str, np.ndarray, np.ndarray]:
    """``(text, starts, ends)`` from an Utterance-like object or a 3-tuple."""
    if all(hasattr(item, a) for a in ("text", "starts", "ends")):
        return item.text, np.asarray(item.starts, np.float64), np.asarray(item.ends, np.float64)
    if isinstance(item, (tuple, list)) and len(item) == 3:
        return item[0], np.asarray(item[1], np.float64), np.asarray(item[2], np.float64)
    raise TypeError(f"truths must hold (text, starts, ends) tuples or Utterances, got {describe(item)}")


def head_table(patterns: Sequence[np.ndarray], truths: Sequence[object],
               filter_width: int = FILTER_WIDTH, space: str = SPACE) -> list[dict[str, Any]]:
    """Score every cross-attention head alone as the alignment head, over a set of utterances.

    Args:
        patterns: one ``[layer, head, token, frame]`` array per utterance (:func:`cross_attention`).
        truths: per utterance ``(text, true_starts, true_ends)`` or an object with those attributes
            (:class:`explorer.data.speech.Utterance`).
        filter_width: median filter width.
        space: ``"leading"`` or ``"trailing"`` (who owns the space between two words; module docstring).

    Returns:
        One row per ``(layer, head)``, layer-major: ``{"layer", "head", "mae_ms", "f1_50", "f1_100"}``, each metric
        a :func:`summarise` dict over the utterances, plus ``"per_utterance_mae_ms"`` (the values).
    """
    if not isinstance(patterns, (list, tuple)) or not patterns:
        raise TypeError(f"patterns must be a non-empty list of [layer, head, token, frame] arrays, got "
                        f"{describe(patterns)}")
    if not isinstance(truths, (list, tuple)) or len(truths) != len(patterns):
        raise ValueError(f"truths must be a list with one entry per pattern ({len(patterns)}), got "
                         f"{describe(truths)}")
    space = _check_space(space)
    truths = [_truth(t) for t in truths]
    layers, n_heads = np.shape(patterns[0])[:2]
    rows = []
    for layer, head in all_heads(layers, n_heads):
        scores = []
        for p, (text, true_starts, true_ends) in zip(patterns, truths):
            a = align_patterns(p, text, [(layer, head)], filter_width, space=space)
            scores.append(utterance_scores(a.starts, a.ends, true_starts, true_ends))
        row: dict[str, Any] = {"layer": layer, "head": head}
        for key in ("mae_ms", "f1_50", "f1_100"):
            row[key] = summarise([s[key] for s in scores])
        row["per_utterance_mae_ms"] = [s["mae_ms"] for s in scores]
        rows.append(row)
    return rows


def choose_heads(table: Sequence[dict[str, Any]], k: int) -> list[tuple[int, int]]:
    """The ``k`` heads of :func:`head_table` with the lowest mean MAE (ties: lower layer, then head, first)."""
    if not isinstance(table, (list, tuple)) or not table:
        raise TypeError(f"table must be a non-empty list of head_table rows, got {describe(table)}")
    k = check_int("k", k, 1, len(table), note="number of heads")
    ranked = sorted(table, key=lambda r: (r["mae_ms"]["mean"], r["layer"], r["head"]))
    return [(int(r["layer"]), int(r["head"])) for r in ranked[:k]]
