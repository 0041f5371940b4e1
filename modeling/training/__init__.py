"""The trainer, optimizers, the run skeleton and the training tasks."""
