"""Input pipelines (grain): sources, packing and the batch iterators the training loop uses."""
