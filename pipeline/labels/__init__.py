"""The teacher run once: compiled inference, packed top-k / sampled targets, the
label cache stages (pretraining and task) and reuse across corpus versions."""
