"""TinyBERT-style data augmentation: word candidates from a model, and the stage run."""
