"""The model side, reading pipeline/ only: layers -> networks -> models -> losses,
with checkpoints, training and evaluation beside them."""
