"""Model parts that tasks hold (composition, not inheritance): a part owns a model's
loading, its trainable/frozen split, its forward passes and its export."""
