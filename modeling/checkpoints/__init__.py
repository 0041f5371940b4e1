"""Reading and writing weights: Google TF1, Hugging Face safetensors and the
trainer's own checkpoints, over one name mapping.

Imports run one way: name_map (the shared mapping and strict load plan)
<- google, hf, training (one module per format) <- loading (picks the
format for a path).
"""
