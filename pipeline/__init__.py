"""The data side, in data order: core (stage contract, errors, world) -> text
(tokenizer, vocab) -> records (schema, TFRecord codec, record stages) -> corpus
(Wikipedia dumps, shards, refresh) and labels (teacher label caches) -> inputs
(tf.data readers). Imports never reach into modeling/ or tools/."""
