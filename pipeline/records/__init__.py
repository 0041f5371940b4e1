"""Text -> TFRecords: the one record schema, the TFRecord codec, and the stages
that write records: pretraining (masked LM + NSP instances) and classification."""
