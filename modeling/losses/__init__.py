"""Losses as pure float32 functions: pretraining, distillation, classification."""
