"""The record schema, the TFRecord codec and the stages that write records:
pretraining (masked LM + NSP) and classification, plus real task data."""
