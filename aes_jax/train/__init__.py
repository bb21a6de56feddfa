"""The one training engine: sharding, optimiser, train state, step, loop, checkpoints."""
