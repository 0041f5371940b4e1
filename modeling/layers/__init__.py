"""Building blocks of the encoder and its heads (Keras layers), with no
knowledge of BertConfig: each takes its own hyper-parameters."""
