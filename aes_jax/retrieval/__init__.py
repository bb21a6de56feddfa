"""Passage retrieval for StepER: `Retriever.search(query, k) -> [(passage_index, score)]`."""
