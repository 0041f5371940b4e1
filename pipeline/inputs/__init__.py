"""tf.data readers for every record kind: pretraining, distill (cached teacher
labels) and classification records, all parsed by parsing.parse_fn."""
