"""Encoders (not trained alone): BERT and its config."""
