"""Word error rate (Levenshtein distance over words, as in the speech-recognition literature)."""

from __future__ import annotations

from collections.abc import Sequence

from explorer._checks import check_type

__all__ = ["edit_distance", "word_error_rate"]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Fewest substitutions, deletions and insertions turning ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edit distance over total reference words (texts split on whitespace).

    Raises:
        ValueError: the two lists differ in length, or the references hold no word.
    """
    check_type("references", references, (list, tuple), "a list of str")
    check_type("hypotheses", hypotheses, (list, tuple), "a list of str")
    if len(references) != len(hypotheses):
        raise ValueError(f"references and hypotheses must have the same length, got {len(references)} and "
                         f"{len(hypotheses)}")
    words = sum(len(r.split()) for r in references)
    if words == 0:
        raise ValueError("references must contain at least one word")
    return sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses)) / words
