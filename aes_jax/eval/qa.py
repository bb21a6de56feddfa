"""Answer metrics for open QA, with the official HotpotQA evaluation's normalisation:
lower case, punctuation removed, the articles a / an / the removed, whitespace collapsed.

* `exact_match`: normalised strings equal;
* `f1`: token-overlap F1 of the normalised strings; an answer of yes / no / noanswer on
  either side scores 0 unless both are equal (as the official script);
* `accuracy`: the normalised gold answer occurs in the normalised prediction (StepER's Acc);
* `extract_answer`: the text after the last "So the answer is" (a reasoning trace's
  conclusion), else the whole text.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence

SPECIAL = ("yes", "no", "noanswer")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_CONCLUSION = re.compile(r"so the answer is\s*:?\s*", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in SPECIAL or ref in SPECIAL) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    same = sum((collections.Counter(pred_tokens) & collections.Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def accuracy(prediction: str, gold: str) -> float:
    return float(normalize_answer(gold) in normalize_answer(prediction))


def extract_answer(text: str) -> str:
    parts = _CONCLUSION.split(text)
    answer = parts[-1] if len(parts) > 1 else text
    return answer.strip().split("\n")[0].strip().rstrip(".").strip()


def qa_report(predictions: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """Mean EM / F1 / Acc (as fractions) over paired predictions and gold answers."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold answers")
    n = max(len(golds), 1)
    return {"em": sum(map(exact_match, predictions, golds)) / n,
            "f1": sum(map(f1, predictions, golds)) / n,
            "acc": sum(map(accuracy, predictions, golds)) / n, "n": len(golds)}
