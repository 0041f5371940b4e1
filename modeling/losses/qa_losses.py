"""Span losses for extractive QA: fine-tuning and distillation, pure float32 functions.

Shape legend: B=batch, S=sequence length.

The start and end positions are two S-way classifications over the window's
tokens (run_squad: their cross-entropies averaged). Distillation applies the
classifier's loss (modeling/losses/task_losses.py) to each of them:

  1/2 * sum over {start, end} of
      alpha * CE(y, softmax(s)) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))

Padding positions are masked out of both distributions (their logits pushed
to span.NEG_INF before the softmax) by the caller.
"""

from modeling.losses import task_losses


def span_loss(start_logits, end_logits, batch, config, teacher=None):
  """The module doc's loss and its terms.

  Args:
    start_logits, end_logits: float32 [B,S], padding already masked.
    batch: has start_positions, end_positions [B,1].
    config: task_losses.TaskDistillConfig (alpha = 1: fine-tuning).
    teacher: (start, end) float32 [B,S] teacher logits, padding masked, when
      alpha < 1.
  Returns:
    (scalar loss, {"ce_loss": [], "kd_loss": [] (with a teacher)}).
  """
  teacher = teacher or (None, None)
  totals, terms = [], {}
  for logits, positions, teacher_logits in (
      (start_logits, batch["start_positions"], teacher[0]),
      (end_logits, batch["end_positions"], teacher[1])):
    total, parts = task_losses.task_distillation_loss(logits, positions, teacher_logits,
                                                      config)
    totals.append(total)
    for name, value in parts.items():
      terms[name] = terms.get(name, 0.0) + 0.5 * value
  return 0.5 * (totals[0] + totals[1]), terms


def position_accuracy(start_logits, end_logits, batch):
  """Share of windows whose argmax start and end both hit the gold positions: []."""
  start = task_losses.accuracy(start_logits, batch["start_positions"])
  end = task_losses.accuracy(end_logits, batch["end_positions"])
  return 0.5 * (start + end)
