"""Sentences for the attention lessons (written for this project; no download)."""

from __future__ import annotations

from explorer._checks import check_int

__all__ = ["SENTENCES", "long_text"]

# name -> text; the first is the default of the attention-maps app.
SENTENCES = {
    "coreference": "The animal didn't cross the street because it was too tired.",
    "coreference (wide)": "The animal didn't cross the street because it was too wide.",
    "agreement": "The keys to the old wooden cabinet in the hallway are on the table.",
    "negation": "I did not say that the movie was bad; I said it was far too long.",
    "non-ASCII": "Café naïve — 東京 🚀 déjà vu, über cool.",
}

_PARAGRAPHS = (
    "A convolution looks at a small window of its input and slides that window across the whole image, so every "
    "output depends only on nearby pixels. Stacking layers widens the window step by step.",
    "Self-attention compares every token with every other token and mixes their values with weights that depend "
    "on the content itself, so a word at the start of a paragraph can influence a word at the end in one layer.",
    "That freedom has a price: the attention matrix grows with the square of the sequence length, while the cost "
    "of a convolution grows linearly. Long documents and large images make the difference obvious.",
    "Many attention heads in trained models nevertheless behave like convolutions: they attend mostly to the "
    "previous or the next token. Others spread their attention widely or park it on the separator token.",
)


def long_text(words: int) -> str:
    """Deterministic English text of about ``words`` words, built by cycling the paragraphs above."""
    check_int("words", words, 1, 20_000)
    out: list[str] = []
    i = 0
    while len(out) < words:
        out.extend(_PARAGRAPHS[i % len(_PARAGRAPHS)].split())
        i += 1
    return " ".join(out[:words])
