"""Training: sharded state and jitted steps, the optimizer, input placement, checkpoints, the
loop."""
