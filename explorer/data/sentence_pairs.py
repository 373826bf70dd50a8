"""Sentence pairs for the attention-vs-attribution study: varied English sentences A, each with a short sentence B.

Written for this project (templates x vocabulary, no download). :func:`sentence_pairs` draws ``n`` pairs from a
seeded stream:

* sentence **A** comes from one of :data:`TEMPLATES` (twelve shapes: plain clauses, time and place adjuncts,
  negation, a question, reported speech, a relative clause, a passive, subordinate clauses, two subjects), the
  template cycling with the pair's index so every shape is equally common; its slots (people and animals,
  objects, places, verbs, adjectives, adverbs, times, names, reasons) are filled from the vocabularies below;
* sentence **B** is a short sentence about exactly one noun of A -- its subject, its object or its place, drawn at
  random -- so the two share one content word (``SentencePair.shared``). An embedding model's similarity of A and
  B should then lean on that word, which gives attribution maps something checkable to point at.

Determinism: the only source of randomness is ``random.Random(seed).random()``, whose output for a given seed
Python guarantees across versions (the other methods of ``random`` are not guaranteed to stay the same, so
choices are made as ``int(random() * len(options))``). Pairs are drawn one after another and a pair whose A
already appeared is skipped, so ``sentence_pairs(n, seed)`` is a prefix of ``sentence_pairs(m, seed)`` for
``n < m`` and every A is distinct. The vocabularies are disjoint, so the shared word occurs in A once.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from explorer._checks import check_int

__all__ = ["SentencePair", "sentence_pairs", "TEMPLATES", "MAX_PAIRS", "SHARED_SLOTS"]

# --- vocabulary (disjoint lists: a word belongs to one slot only) -------------------------------------------------

AGENTS = ("teacher", "farmer", "doctor", "child", "pilot", "painter", "student", "baker", "nurse", "sailor",
          "dog", "cat", "horse", "fox", "neighbour", "musician", "engineer", "gardener", "soldier", "writer")
OBJECTS = ("book", "letter", "boat", "piano", "bicycle", "cake", "window", "map", "camera", "lamp", "guitar",
           "ladder", "blanket", "basket", "clock", "umbrella", "painting", "key", "bottle", "chair")
PLACES = ("kitchen", "station", "library", "market", "harbour", "village", "office", "museum", "forest",
          "hospital", "school", "bakery", "church", "stadium", "park", "castle")
# past tense = past participle for all but "hide" (participle "hidden"), so "had {verb}" and "was {verb}" read
# correctly except with "hid"; changing the list would change every generated pair (and the shipped study's inputs)
VERBS = (("repair", "repaired"), ("paint", "painted"), ("carry", "carried"), ("find", "found"), ("sell", "sold"),
         ("clean", "cleaned"), ("borrow", "borrowed"), ("lose", "lost"), ("open", "opened"), ("move", "moved"),
         ("buy", "bought"), ("wrap", "wrapped"), ("hide", "hid"), ("drop", "dropped"), ("fix", "fixed"))
AGENT_ADJECTIVES = ("old", "young", "tired", "clever", "quiet", "busy", "happy", "nervous", "careful", "famous",
                    "brave", "angry")
OBJECT_ADJECTIVES = ("broken", "heavy", "red", "wooden", "new", "tiny", "expensive", "dusty", "strange",
                     "beautiful", "green", "shiny")
ADVERBS = ("quietly", "slowly", "carefully", "quickly", "proudly", "suddenly", "happily", "secretly")
TIMES = ("yesterday", "this morning", "last winter", "after lunch", "at dawn", "on Sunday", "before the storm",
         "late at night", "last week", "in the spring")
NAMES = ("Anna", "Ben", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas")
REASONS = ("it was raining", "the shop was closed", "nobody else could", "the road was blocked",
           "the power went out", "it was a holiday", "the bus was late", "everyone was asleep")

# Sentence A shapes. Slots: {agent} {agent2} {object} {place} {verb} (past) {base} (infinitive) {aadj} {oadj}
# {adv} {time} {Time} (capitalised) {name} {reason} {a_agent} / {a_oadj} (the indefinite article for the word).
TEMPLATES = (
    "The {aadj} {agent} {adv} {verb} the {oadj} {object} in the {place}.",
    "{Time}, {a_agent} {agent} {verb} {a_oadj} {oadj} {object} near the {place}.",
    "Because {reason}, the {agent} {verb} the {object} {time}.",
    "Did the {agent} really {base} the {object} at the {place}?",
    "{name} said that the {aadj} {agent} had {verb} the {object}.",
    "The {agent} did not {base} the {object}; it stayed in the {place}.",
    "In the {place}, the {agent} and the {agent2} {verb} {a_oadj} {oadj} {object} together.",
    "Nobody expected the {aadj} {agent} to {base} the {object} so {adv}.",
    "While the {agent} was in the {place}, {name} {verb} the {object}.",
    "The {object} that the {agent} {verb} {time} was {oadj}.",
    "Why was the {oadj} {object} in the {place} {verb} by {a_agent} {aadj} {agent}?",
    "After the {agent} {verb} the {object}, the {agent2} went to the {place}.",
)

# Sentence B shapes per shared slot: one short sentence about that noun only.
B_TEMPLATES = {
    "agent": ("{A_word} {word} was there.", "This is about {a_word} {word}.", "The {word} is busy today.",
              "Everyone knows the {word}."),
    "object": ("Someone has {a_word} {word}.", "The {word} is on the table.", "I need {a_word} {word}.",
               "There was {a_word} {word} in the box."),
    "place": ("We met at the {word}.", "The {word} was crowded.", "They walked to the {word}.",
              "The {word} is closed on Mondays."),
}
SHARED_SLOTS = tuple(B_TEMPLATES)

# More than enough for any study here; the number of distinct A sentences is far larger (> 10^8).
MAX_PAIRS = 100_000
_MAX_SKIPS = 10_000  # duplicates tolerated in a row before giving up (never reached with these vocabularies)


@dataclass(frozen=True)
class SentencePair:
    """One generated pair (:func:`sentence_pairs`)."""

    a: str          # the sentence whose tokens are attributed
    b: str          # a short sentence sharing one noun with ``a``
    shared: str     # that noun (occurs once in ``a`` and once in ``b``, as a whole word)
    slot: str       # which slot of ``a`` it fills: "agent", "object" or "place"
    template: int   # index of ``a``'s shape in TEMPLATES


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _pick(rng: random.Random, options: tuple) -> object:
    return options[int(rng.random() * len(options))]


def _slots_needed(template: str) -> set[str]:
    return set(re.findall(r"{(\w+)}", template))


def _draw(rng: random.Random, index: int) -> SentencePair:
    template_index = index % len(TEMPLATES)
    template = TEMPLATES[template_index]
    agent = _pick(rng, AGENTS)
    agent2 = _pick(rng, tuple(a for a in AGENTS if a != agent))
    base, verb = _pick(rng, VERBS)
    values = {
        "agent": agent, "agent2": agent2, "object": _pick(rng, OBJECTS), "place": _pick(rng, PLACES),
        "verb": verb, "base": base, "aadj": _pick(rng, AGENT_ADJECTIVES), "oadj": _pick(rng, OBJECT_ADJECTIVES),
        "adv": _pick(rng, ADVERBS), "time": _pick(rng, TIMES), "name": _pick(rng, NAMES),
        "reason": _pick(rng, REASONS),
    }
    values["Time"] = values["time"][0].upper() + values["time"][1:]
    # the article agrees with the word right after it in the template
    values["a_agent"] = _article(values["aadj"] if "{a_agent} {aadj}" in template else agent)
    values["a_oadj"] = _article(values["oadj"])
    a = template.format(**values)
    a = a[0].upper() + a[1:]
    slot = _pick(rng, tuple(s for s in SHARED_SLOTS if s in _slots_needed(template)))
    word = values[slot]
    b_template = _pick(rng, B_TEMPLATES[slot])
    b = b_template.format(word=word, a_word=_article(word), A_word=_article(word).capitalize())
    return SentencePair(a=a, b=b, shared=word, slot=slot, template=template_index)


def sentence_pairs(n: int, seed: int = 0) -> list[SentencePair]:
    """``n`` distinct sentence pairs, a deterministic function of ``(n, seed)``; see the module docstring.

    Args:
        n: number of pairs, 1 .. :data:`MAX_PAIRS`.
        seed: int >= 0.

    Returns:
        A list of :class:`SentencePair`; pair ``i`` uses template ``i mod 12`` only if no duplicate was skipped
        before it (``SentencePair.template`` says which one it used).
    """
    check_int("n", n, 1, MAX_PAIRS)
    check_int("seed", seed, 0)
    rng = random.Random(seed)
    pairs: list[SentencePair] = []
    seen: set[str] = set()
    drawn = skips = 0
    while len(pairs) < n:
        pair = _draw(rng, drawn)
        drawn += 1
        if pair.a in seen:
            skips += 1
            if skips > _MAX_SKIPS:
                raise RuntimeError("sentence_pairs: too many duplicate sentences in a row")
            continue
        skips = 0
        seen.add(pair.a)
        pairs.append(pair)
    return pairs
