"""The retriever interface StepER's stepwise inference calls."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable


@runtime_checkable
class Retriever(Protocol):
    passages: Sequence[str]

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """The k best passages for `query`: (passage index, score), best first; ties go to
        the lower index."""

    def search_many(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """`search` for each query (one batched computation where the retriever can)."""
