"""What runs: forward, training step, checkpoint, convergence."""
