"""Model compression that keeps a standard dense BERT: structured pruning of the FFN
intermediate neurons of a classifier (pruning.py: importance scores, the smaller
model with the kept rows and columns copied). The schedule that prunes in steps and
recovers each by task distillation is modeling/training/prune_runs.py."""
