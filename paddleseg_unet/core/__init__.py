"""The engine: training loop, evaluation, inference, metrics, checkpoints, optimizers."""
