"""Corpus stages: Wikipedia dump -> documents -> sentence shards -> vocab -> TFRecords."""
