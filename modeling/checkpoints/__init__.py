"""Reading and writing weights: Google TF1, Hugging Face safetensors and the
trainer's own checkpoints, over one name mapping."""
