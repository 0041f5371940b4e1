"""Trainable models: the pretrainer, the classifier, the distillation student."""
