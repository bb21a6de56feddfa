"""torch-backed text scorers for RLearner's evaluation: BERTScore (the `bert-score`
package, run on a local encoder: the packaged MiniLM by default, since no other model is
offline) and NLI entailment with any local Hugging Face sequence-classification
cross-encoder. Both read safetensors from local directories only."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


class BertScore:
    """F1 of BERTScore (no baseline rescaling: none exists for a local model), layer
    `num_layers` of the encoder (MiniLM-L6: its last, 6)."""

    def __init__(self, model_dir: str | os.PathLike, num_layers: int | None = None,
                 batch_size: int = 32, device: str = "cpu"):
        from bert_score import BERTScorer
        from transformers import AutoConfig

        self.model_dir = str(model_dir)
        layers = num_layers or AutoConfig.from_pretrained(
            self.model_dir, local_files_only=True).num_hidden_layers
        self.num_layers = int(layers)
        self._scorer = BERTScorer(model_type=self.model_dir, num_layers=self.num_layers,
                                  batch_size=batch_size, device=device, lang="en")

    def f1(self, candidates: Sequence[str], references: Sequence[str]) -> np.ndarray:
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
        if not candidates:
            return np.zeros(0)
        # An empty candidate has no tokens to match: its F1 is 0, not an error.
        empty = [not c.strip() for c in candidates]
        safe = [c if c.strip() else "." for c in candidates]
        _, _, f1 = self._scorer.score(list(safe), list(references), verbose=False)
        return np.where(empty, 0.0, f1.numpy().astype(np.float64))


class NliScorer:
    """P(entailment) of `hypothesis` given `premise` from a local NLI cross-encoder; the
    entailment label is found in the model config's id2label."""

    def __init__(self, model_dir: str | os.PathLike, batch_size: int = 16,
                 max_length: int = 512, device: str = "cpu"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model_dir = str(model_dir)
        self._tok = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self._model = AutoModelForSequenceClassification.from_pretrained(
            self.model_dir, local_files_only=True, use_safetensors=True).to(device).eval()
        labels = {int(i): str(name).lower() for i, name in self._model.config.id2label.items()}
        found = [i for i, name in labels.items() if name.startswith("entail")]
        if len(found) != 1:
            raise ValueError(f"{self.model_dir}: config id2label {labels} names no single "
                             "'entailment' label; is it an NLI model?")
        self.entailment_index = found[0]
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self._torch = torch

    def entailment(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        if len(premises) != len(hypotheses):
            raise ValueError(f"{len(premises)} premises but {len(hypotheses)} hypotheses")
        out = []
        for start in range(0, len(premises), self.batch_size):
            enc = self._tok(list(premises[start:start + self.batch_size]),
                            list(hypotheses[start:start + self.batch_size]),
                            truncation=True, max_length=self.max_length, padding=True,
                            return_tensors="pt").to(self.device)
            with self._torch.no_grad():
                probs = self._model(**enc).logits.float().softmax(-1)
            out.append(probs[:, self.entailment_index].cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def __call__(self, explanations: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Entailment of each correct option (as 'The correct answer is: ...') by its
        explanation: the `NliScorer` protocol of `eval.preference_builder`."""
        return self.entailment(explanations, [f"The correct answer is: {a}" for a in answers])


class MeanPooledEncoder:
    """Sentence embeddings: a local HF encoder's last hidden states mean-pooled over the
    attention mask, L2-normalised (all-MiniLM-L6-v2's sentence-transformers recipe)."""

    def __init__(self, model_dir: str | os.PathLike, batch_size: int = 64,
                 max_length: int = 256, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = str(model_dir)
        self._tok = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self._model = AutoModel.from_pretrained(self.model_dir, local_files_only=True,
                                                use_safetensors=True).to(device).eval()
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self._torch = torch

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """[N, hidden] float32, unit rows."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self._tok(list(texts[start:start + self.batch_size]), truncation=True,
                            max_length=self.max_length, padding=True,
                            return_tensors="pt").to(self.device)
            with self._torch.no_grad():
                hidden = self._model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(self._torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
        return (np.concatenate(out) if out else np.zeros((0, 0))).astype(np.float32)
