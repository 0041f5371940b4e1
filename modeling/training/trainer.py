"""One custom training loop for every task (pretraining, later distillation).

The loss is pluggable: a task object provides

  compute_loss(model, batch, training) -> (scalar loss, {name: scalar})
  eval_sums(model, batch) -> {name: (numerator, denominator)}
  eval_metrics: the names eval_sums returns

or, for metrics that do not add up over batches (F1, AUC), evaluate(model,
eval_dataset, world) -> {name: float} instead of eval_sums. An optional
on_eval(step, results) callback runs on rank 0 after each evaluation (e.g.
to keep the best checkpoint); evaluation comes before the checkpoint of the
same step, so a run killed in between evaluates that step again on resume.

The trainer does the rest: tf.function steps on fixed shapes, gradient
accumulation in float32 variables, loss scaling (a Keras LossScaleOptimizer
for fp16), Horovod gradient averaging, checkpoints with exact resume
(modeling/checkpoints/training.py), periodic eval, TensorBoard, JSON results
and a progress line. Only rank 0 writes files or prints.

Per-step data: each rank feeds micro-batches of global_batch_size /
(ranks x gradient_accumulation_steps) examples.
"""

import dataclasses
import json
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf

from modeling.networks import bert as bert_lib
from modeling.checkpoints import training as training_checkpoints
from pipeline.core import errors
from pipeline.core import progress as progress_lib
from pipeline.core import world as world_lib
from pipeline.core import stage

EVAL_RESULTS = "eval_results.json"
TENSORBOARD = "tensorboard"


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Loop settings. Steps count optimizer updates (not micro-batches)."""
  num_train_steps: int
  global_batch_size: int  # Sequences per optimizer step, all ranks.
  gradient_accumulation_steps: int = 1
  save_checkpoints_steps: int = 1000
  keep_checkpoint_max: int = 5
  eval_every_steps: int = 0  # 0: evaluate at the end only.
  log_every_steps: int = 100
  # XLA for the step functions (a GPU option: tools/pretrain.py enables it
  # only when a GPU is visible; under Horovod it needs Horovod's XLA ops).
  jit_compile: bool = False

  def __post_init__(self):
    for name in ("num_train_steps", "global_batch_size",
                 "gradient_accumulation_steps", "save_checkpoints_steps",
                 "keep_checkpoint_max", "log_every_steps"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.eval_every_steps < 0:
      raise ValueError("eval_every_steps must be >= 0")


def _dense_gradients(gradients, variables):
  # IndexedSlices (embedding lookups) -> dense, None (unused) -> zeros: the
  # float32 accumulators and grouped allreduce take dense tensors.
  return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
          for g, v in zip(gradients, variables)]


def _mean_metrics(per_micro_batch):
  """Mean over a step's micro-batches of {name: scalar} -> {name: float}."""
  names = sorted(per_micro_batch[0])
  return {n: float(np.mean([m[n].numpy() for m in per_micro_batch]))
          for n in names}


class Trainer:
  """Trains `model` with `optimizer` (built) on `task`'s loss."""

  def __init__(self, model, optimizer, task, config, output_dir=None,
               world=None, stream=None, on_eval=None):
    self._model, self._optimizer, self._task = model, optimizer, task
    self._on_eval = on_eval
    self._config = config
    self._output_dir = output_dir
    self._world = world or world_lib.World()
    self._stream = stream or sys.stderr
    self._variables = model.trainable_variables
    self._tf_variables = world_lib.tf_variables(self._variables)
    self._step = tf.Variable(0, dtype=tf.int64, trainable=False,
                             name="global_step")
    # Gradient sums of the micro-batches of one step. They are zero at every
    # step boundary, where checkpoints are taken, so they are not saved.
    self._accumulators = []
    if config.gradient_accumulation_steps > 1:
      self._accumulators = [
          tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False)
          for v in self._variables]
    jit = config.jit_compile
    self._fused_fn = tf.function(self._fused_step, jit_compile=jit)
    self._accumulate_fn = tf.function(self._accumulate, jit_compile=jit)
    self._apply_fn = tf.function(self._apply_accumulated)
    self._eval_fn = None
    self._writer = None
    if self._world.is_chief and output_dir:
      self._writer = tf.summary.create_file_writer(
          os.path.join(output_dir, TENSORBOARD))

  @property
  def step(self):
    return int(self._step.numpy())

  # --- Steps (traced once each: batches have fixed shapes) ---------------

  def _gradients(self, batch, wrap_tape):
    with tf.GradientTape() as tape:
      loss, metrics = self._task.compute_loss(self._model, batch,
                                              training=True)
      scaled = self._optimizer.scale_loss(loss)  # Identity unless fp16.
    gradients = wrap_tape(tape).gradient(scaled, self._tf_variables)
    return loss, metrics, _dense_gradients(gradients, self._tf_variables)

  def _apply(self, gradients):
    # Clipping (global_clipnorm) and unscaling happen inside apply, after
    # the ranks' gradients were averaged.
    self._optimizer.apply(gradients, self._variables)
    self._step.assign_add(1)

  def _fused_step(self, batch):
    """No accumulation: Horovod's DistributedGradientTape averages."""
    loss, metrics, gradients = self._gradients(batch, self._world.wrap_tape)
    self._apply(gradients)
    return dict(metrics, loss=loss)

  def _accumulate(self, batch):
    loss, metrics, gradients = self._gradients(batch, lambda tape: tape)
    for accumulator, gradient in zip(self._accumulators, gradients):
      accumulator.assign_add(tf.cast(gradient, tf.float32))
    return dict(metrics, loss=loss)

  def _apply_accumulated(self):
    """Mean of the k micro-batch gradients, averaged over ranks once."""
    k = float(self._config.gradient_accumulation_steps)
    gradients = [a.read_value() / k for a in self._accumulators]
    self._apply(self._world.allreduce_gradients(gradients))
    for accumulator in self._accumulators:
      accumulator.assign(tf.zeros_like(accumulator))

  def _run_step(self, iterator):
    """One optimizer step; returns the micro-batches' metric tensors."""
    if not self._accumulators:
      return [self._fused_fn(next(iterator))]
    metrics = [self._accumulate_fn(next(iterator))
               for _ in range(self._config.gradient_accumulation_steps)]
    self._apply_fn()
    return metrics

  # --- Evaluation ----------------------------------------------------------

  def evaluate(self, eval_dataset):
    """Exact metrics over the whole eval set (all ranks' shares summed)."""
    if hasattr(self._task, "evaluate"):
      return self._task.evaluate(self._model, eval_dataset, self._world)
    if self._eval_fn is None:
      self._eval_fn = tf.function(
          lambda batch: self._task.eval_sums(self._model, batch),
          input_signature=[eval_dataset.element_spec])
    names = list(self._task.eval_metrics)
    totals = np.zeros(2 * len(names), np.float64)  # numerators, denominators
    for batch in eval_dataset:
      sums = self._eval_fn(batch)
      for i, name in enumerate(names):
        totals[i] += float(sums[name][0])
        totals[len(names) + i] += float(sums[name][1])
    totals = self._world.allreduce_sum(totals)
    return {name: totals[i] / max(totals[len(names) + i], 1e-12)
            for i, name in enumerate(names)}

  # --- The loop ------------------------------------------------------------

  def _shared_variables(self):
    """What rank 0 broadcasts: everything except per-rank RNG states."""
    rng = {id(v) for v in training_checkpoints.dropout_rng_states(
        self._model)}
    model_vars = [v for v in world_lib.tf_variables(self._model.variables)
                  if id(v) not in rng]
    return model_vars + list(self._optimizer.variables) + [self._step]

  def _restore_or_start(self, iterator):
    """Resumes from the latest checkpoint, if any; syncs all ranks."""
    checkpoint = None
    if self._output_dir:
      checkpoint = training_checkpoints.TrainingCheckpoint(
          self._output_dir, self._model, self._optimizer, self._step,
          iterator, self._world, self._config.keep_checkpoint_max)
      checkpoint.write_config(bert_lib.backbone(self._model).config)
      step = checkpoint.latest_step()
      if step:
        checkpoint.restore(step)
        self._log(f"resumed from step {step}")
    self._world.broadcast_variables(self._shared_variables())
    return checkpoint

  def train(self, train_dataset, eval_dataset=None):
    """Trains to num_train_steps (resuming), evaluates; returns a summary."""
    iterator = iter(train_dataset)
    checkpoint = self._restore_or_start(iterator)
    total = self._config.num_train_steps
    meter = _Meter(self.step, total, self._config.global_batch_size)
    step, saved = self.step, self.step
    while step < total:
      metrics = self._run_step(iterator)
      step += 1
      meter.tick(step)
      if step % self._config.log_every_steps == 0 or step == total:
        self._log_train(step, metrics, meter)
      if self._periodic_eval_due(step, eval_dataset):
        self._record_eval(step, self.evaluate(eval_dataset))
      if checkpoint and step % self._config.save_checkpoints_steps == 0:
        checkpoint.save(step)
        saved = step
    if checkpoint and saved != step:
      checkpoint.save(step)
    results = None
    if eval_dataset is not None:  # Also after a resume at the last step.
      results = self.evaluate(eval_dataset)
      self._record_eval(step, results)
    return {"step": step, "eval": results, **meter.summary()}

  def _periodic_eval_due(self, step, eval_dataset):
    # The last step is evaluated after the loop, once.
    every = self._config.eval_every_steps
    return (eval_dataset is not None and every > 0 and step % every == 0 and
            step < self._config.num_train_steps)

  # --- Output (rank 0) -----------------------------------------------------

  def _log(self, message):
    if self._world.is_chief:
      print(f"[train] {message}", file=self._stream, flush=True)

  def _log_train(self, step, micro_metrics, meter):
    metrics = _mean_metrics(micro_metrics)
    names = sorted(metrics)
    # The ranks' mean: what a single process with the global batch reports.
    values = self._world.allreduce_sum([metrics[n] for n in names])
    metrics = {n: v / self._world.size for n, v in zip(names, values)}
    if not math.isfinite(metrics["loss"]):  # The same on every rank: all stop together.
      raise errors.DivergedError(
          self._output_dir or "training", f"loss {metrics['loss']} at step {step}: the "
          "run diverged; stopped (lower --learning_rate, or check the loss' inputs)")
    lr = float(self._optimizer.learning_rate)  # The next step's rate.
    self._log(f"step {step}/{self._config.num_train_steps}  "
              f"loss {metrics['loss']:.4f}  lr {lr:.3e}  "
              f"{meter.rate():.1f} seq/s  ETA "
              f"{progress_lib.format_duration(meter.eta(step))}")
    if self._writer:
      with self._writer.as_default(step=step):
        for name, value in metrics.items():
          tf.summary.scalar(f"train/{name}", value)
        tf.summary.scalar("train/learning_rate", lr)
        tf.summary.scalar("train/sequences_per_second", meter.rate())
      self._writer.flush()

  def _record_eval(self, step, results):
    self._log(f"eval at step {step}: " + "  ".join(
        f"{k} {v:.4f}" for k, v in sorted(results.items())))
    if not (self._world.is_chief and self._output_dir):
      return
    with self._writer.as_default(step=step):
      for name, value in results.items():
        tf.summary.scalar(f"eval/{name}", value)
    self._writer.flush()
    append_eval_results(self._output_dir, step, results)
    if self._on_eval:
      self._on_eval(step, results)


def append_eval_results(output_dir, step, results):
  """Adds (or, after a resume, replaces) the entry of `step`, atomically."""
  path = os.path.join(output_dir, EVAL_RESULTS)
  entries = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      entries = [e for e in json.load(f) if e["step"] != step]
  entries.append(dict(results, step=step))
  entries.sort(key=lambda e: e["step"])
  stage.atomic_write_text(path, stage.json_dumps(entries))


class _Meter:
  """Throughput since the first step (which includes tracing) and ETA."""

  def __init__(self, start_step, total_steps, global_batch_size):
    self._total, self._batch = total_steps, global_batch_size
    self._start_step, self._start_time = None, None
    self._first = start_step
    self._last_step, self._last_time = start_step, time.monotonic()
    self._began = time.monotonic()

  def tick(self, step):
    now = time.monotonic()
    if self._start_step is None:  # Timing starts after the traced step.
      self._start_step, self._start_time = step, now
    self._last_step, self._last_time = step, now

  def steps_per_second(self):
    if self._start_step is None or self._last_step == self._start_step:
      return 0.0
    return ((self._last_step - self._start_step) /
            max(self._last_time - self._start_time, 1e-9))

  def rate(self):
    return self.steps_per_second() * self._batch

  def eta(self, step):
    rate = self.steps_per_second()
    return (self._total - step) / rate if rate else 0.0

  def summary(self):
    return {"steps_this_run": self._last_step - self._first,
            "seconds": round(time.monotonic() - self._began, 3),
            "steps_per_second": round(self.steps_per_second(), 4),
            "sequences_per_second": round(self.rate(), 3)}
