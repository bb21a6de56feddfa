"""A SYNTHETIC demo corpus in the official ASAP ``training_set_rel3.tsv`` format.

NOT real student essays and NOT ASAP data: every essay is generated here from templates
and begins with the marker ``SYNTHETIC DEMO ESSAY.`` It exists so the TRM-AES default runs,
tests and examples work on a fresh checkout without the Kaggle download, with the exact
28-column layout (official header, empty columns where ASAP has none for these prompts)
that real users feed to ``launch.build_dataset``.

The score is learnable from the text: an essay's writing quality follows its sampled score
-- length, vocabulary (plain vs. richer words), on-topic keywords, connectives, spelling
errors and capitalisation -- plus noise (about one essay in eight is written one score
level off), so a small model trained for minutes beats an untrained one on QWK, while a
perfect score stays out of reach. Everything is deterministic in ``seed``.

Prompts mimic ASAP's score ranges: 1 (persuasive letter, 2-12), 3 and 4 (source-based
short answers, 0-3).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from aes_jax.data.asap import OFFICIAL_COLUMNS, SCORE_RANGES

__all__ = ["MARKER", "PROMPT_TEXTS", "ESSAYS_PER_PROMPT", "write_demo_tsv", "demo_rows",
           "demo_essay"]

MARKER = "SYNTHETIC DEMO ESSAY."
ESSAYS_PER_PROMPT = {1: 140, 3: 110, 4: 110}
FIRST_ID = 900_001  # far above real ASAP ids (< 22,000), so the two never collide

PROMPT_TEXTS = {
    1: "Write a letter to your local newspaper explaining the effects computers have on "
       "people, and persuade readers to agree with you.",
    3: "Explain how the features of the setting affect the cyclist in the story.",
    4: "Explain why the author concludes the story with the narrator's promise to try "
       "the test again in the spring.",
}

# Per prompt: on-topic keywords and sentence templates. {k} is a keyword (or an off-topic
# word for weak essays), {a} an adjective, {v} a verb, {c} a connective.
_TOPICS = {
    1: {
        "keywords": ["computers", "technology", "internet", "exercise", "friends", "family",
                     "research", "typing", "games", "society", "online", "information"],
        "templates": [
            "{c} {k} can be {a} for people who {v} every day.",
            "{c} many people {v} with {k} instead of going outside.",
            "{c} I think {k} make our lives {a} because we {v} more.",
            "{c} students {v} {k} to learn about the world.",
            "{c} it is {a} when kids {v} {k} for hours.",
            "{c} my @CAPS1 says that {k} help us {v} with @PERSON1 and others.",
            "{c} the newspaper should tell readers that {k} are {a}.",
        ],
    },
    3: {
        "keywords": ["cyclist", "setting", "heat", "water", "desert", "road", "hills",
                     "thirst", "town", "shortcut", "sun", "bike"],
        "templates": [
            "{c} the {k} made the ride {a} for him.",
            "{c} the cyclist had to {v} because of the {k}.",
            "{c} the {k} in the story was {a} and it affected him.",
            "{c} when he saw the {k} he started to {v}.",
            "{c} the author shows that the {k} is {a}.",
        ],
    },
    4: {
        "keywords": ["Saeng", "hibiscus", "spring", "test", "geese", "snow", "garden",
                     "home", "determination", "mother", "plant", "winter"],
        "templates": [
            "{c} the {k} reminds Saeng of her {a} home.",
            "{c} the author ends with the {k} to show she will {v} again.",
            "{c} Saeng feels {a} when she sees the {k}.",
            "{c} the {k} is a symbol that she will {v} and not give up.",
            "{c} in the spring the {k} will return and she will {v}.",
        ],
    },
}
_OFF_TOPIC = ["stuff", "things", "it", "that", "everything", "something"]
_ADJ_PLAIN = ["good", "bad", "nice", "big", "fun", "hard", "cool"]
_ADJ_RICH = ["beneficial", "detrimental", "remarkable", "challenging", "essential",
             "overwhelming", "significant", "meaningful", "persistent", "unforgiving"]
_VERB_PLAIN = ["do", "get", "go", "like", "use", "try", "play"]
_VERB_RICH = ["persevere", "communicate", "investigate", "collaborate", "reflect",
              "overcome", "contemplate", "demonstrate", "endure"]
_CONN_RICH = ["Furthermore,", "In addition,", "However,", "Consequently,", "For example,",
              "Moreover,", "In conclusion,", "On the other hand,"]
_CONN_PLAIN = ["And", "So", "Also", "But", "Then"]
# Sentences per essay at quality 0 and the number added by full quality.
_LENGTH = {1: (3.0, 15.0), 3: (1.0, 6.0), 4: (1.0, 6.0)}


def _sample_score(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Mostly mid-range scores, as in ASAP, but every level occurs."""
    if rng.random() < 0.3:
        return int(rng.integers(lo, hi + 1))
    mid, sd = (lo + hi) / 2, (hi - lo) / 4
    return int(np.clip(np.rint(rng.normal(mid, sd)), lo, hi))


def _misspell(word: str, rng: np.random.Generator) -> str:
    """Swap two neighbouring letters or drop one: the typical slip of a weak essay."""
    if len(word) < 4 or not word.isalpha():
        return word
    k = int(rng.integers(1, len(word) - 2))
    if rng.random() < 0.5:
        return word[:k] + word[k + 1] + word[k] + word[k + 2:]
    return word[:k] + word[k + 1:]


def _pick(rng: np.random.Generator, rich: list[str], plain: list[str], q: float) -> str:
    pool = rich if rng.random() < q else plain
    return pool[int(rng.integers(len(pool)))]


def _sentence(rng: np.random.Generator, prompt: int, q: float) -> str:
    topic = _TOPICS[prompt]
    template = topic["templates"][int(rng.integers(len(topic["templates"])))]
    on_topic = rng.random() < 0.25 + 0.7 * q
    keyword = (topic["keywords"][int(rng.integers(len(topic["keywords"])))] if on_topic
               else _OFF_TOPIC[int(rng.integers(len(_OFF_TOPIC)))])
    connective = _pick(rng, _CONN_RICH, _CONN_PLAIN, q) if rng.random() < 0.2 + 0.6 * q else ""
    text = template.format(k=keyword, a=_pick(rng, _ADJ_RICH, _ADJ_PLAIN, q),
                           v=_pick(rng, _VERB_RICH, _VERB_PLAIN, q), c=connective).strip()
    words = [(_misspell(w, rng) if rng.random() < 0.18 * (1 - q) else w) for w in text.split()]
    text = " ".join(words)
    if rng.random() < 0.4 * (1 - q):
        text = text[0].lower() + text[1:]
    else:
        text = text[0].upper() + text[1:]
    return text


def _essay(rng: np.random.Generator, prompt: int, q: float) -> str:
    base, extra = _LENGTH[prompt]
    n = max(1, int(round(base + extra * q + rng.normal(0, 0.8 + 0.1 * extra))))
    sentences = [_sentence(rng, prompt, q) for _ in range(n)]
    if q > 0.5 and rng.random() < 0.5:
        # Strong essays quote the prompt's source; exercises the quoting of the TSV writer.
        keyword = _TOPICS[prompt]["keywords"][0]
        sentences.insert(min(1, len(sentences)), f'As the text says, "the {keyword} matters."')
    return f"{MARKER} " + " ".join(sentences)


def demo_essay(rng: np.random.Generator, prompt: int, quality: float) -> str:
    """One synthetic essay on ``prompt``'s topic (1, 3 or 4) written at ``quality`` in [0, 1].

    The public face of the generator behind :func:`demo_rows`, for other synthetic corpora
    (e.g. the ELLIPSE-layout demo): length, vocabulary, connectives, spelling and
    capitalisation all follow ``quality``; the text starts with :data:`MARKER`.
    """
    if prompt not in _TOPICS:
        raise ValueError(f"demo prompt {prompt} has no templates; use one of {sorted(_TOPICS)}")
    if not 0.0 <= quality <= 1.0:
        raise ValueError(f"quality must lie in [0, 1], got {quality}")
    return _essay(rng, prompt, float(quality))


def _rater_columns(rng: np.random.Generator, prompt: int, score: int) -> tuple[int, int]:
    """Two rater scores consistent with the resolved score's range (for realism only)."""
    if prompt == 1:  # prompt 1's resolved score is the sum of two 1-6 ratings
        first = int(np.clip(score // 2 + rng.integers(0, 2) * (score % 2), 1, 6))
        return first, score - first
    other = score - 1 if score > 0 and rng.random() < 0.2 else score
    return score, other


def demo_rows(seed: int = 0) -> list[list[str]]:
    """The corpus as 28-field rows (strings), header excluded."""
    rng = np.random.default_rng(seed)
    rows: list[list[str]] = []
    essay_id = FIRST_ID
    for prompt, count in ESSAYS_PER_PROMPT.items():
        lo, hi = SCORE_RANGES[prompt]
        for _ in range(count):
            score = _sample_score(rng, lo, hi)
            written = score
            if rng.random() < 0.125:  # noise: written one level off its score
                written = int(np.clip(score + rng.choice([-1, 1]), lo, hi))
            q = (written - lo) / (hi - lo)
            r1, r2 = _rater_columns(rng, prompt, score)
            row = [str(essay_id), str(prompt), _essay(rng, prompt, q), str(r1), str(r2), "",
                   str(score)]
            rows.append(row + [""] * (len(OFFICIAL_COLUMNS) - len(row)))
            essay_id += 1
    return rows


def write_demo_tsv(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the synthetic corpus as a ``training_set_rel3.tsv``-format file; returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", quotechar='"', lineterminator="\n")
        writer.writerow(OFFICIAL_COLUMNS)
        writer.writerows(demo_rows(seed))
    return path
