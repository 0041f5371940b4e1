"""The trainer's checkpoints: layout, saving, exact resume, weight import.

A training run's output directory holds

  checkpoints/ckpt-<step>.index/.data-*   rank 0 only: what all ranks share
      model (weights), optimizer (slots, iterations, loss scale), step
  checkpoints/bert_config.json            the model's config (HF "gelu")
  input_state/rank-<r>-of-<n>/ckpt-<step>.*   one per rank: what differs
      iterator (the rank's tf.data position, shuffle buffer included) and
      dropout_rng (the states of the rank's dropout seed generators)

Saving at step N writes every rank's input state first, then (after a
barrier) rank 0's main checkpoint: a main checkpoint exists only when all
per-rank states of its step do, so "latest main checkpoint" is always a
complete resume point. Input states keep one more checkpoint than the main
directory, so the state of the latest main checkpoint survives a kill
between the two writes.
"""

import os

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from modeling.checkpoints import name_map
from modeling.models import heads
from modeling.networks import bert as bert_lib

CHECKPOINTS = "checkpoints"
INPUT_STATE = "input_state"
CONFIG_FILE = "bert_config.json"


def dropout_rng_states(model):
  """The model's dropout seed-generator state variables (tf.Variables).

  Keras keeps them out of tf.train.Checkpoint's view of the model, yet a
  resumed run needs them to draw the same dropout masks.
  """
  return [v.value for v in model.non_trainable_variables
          if v.name == "seed_generator_state"]


def _step_of(prefix):
  return int(prefix.rsplit("-", 1)[1])


class TrainingCheckpoint:
  """Saves and restores one rank's share of a training run's state."""

  def __init__(self, output_dir, model, optimizer, step, iterator, world,
               keep_checkpoint_max):
    self._world = world
    self._dir = os.path.join(output_dir, CHECKPOINTS)
    self._main = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                     step=step)
    self._main_manager = None
    if world.is_chief:
      self._main_manager = tf.train.CheckpointManager(
          self._main, self._dir, max_to_keep=keep_checkpoint_max)
    rank_dir = os.path.join(output_dir, INPUT_STATE,
                            f"rank-{world.rank}-of-{world.size}")
    self._rank = tf.train.Checkpoint(iterator=iterator,
                                     dropout_rng=dropout_rng_states(model))
    self._rank_manager = tf.train.CheckpointManager(
        self._rank, rank_dir, max_to_keep=keep_checkpoint_max + 1)

  def write_config(self, config):
    if self._world.is_chief:
      os.makedirs(self._dir, exist_ok=True)
      config.to_json_file(os.path.join(self._dir, CONFIG_FILE))

  def save(self, step):
    """Writes the state after `step` optimizer steps (all ranks call it)."""
    self._rank_manager.save(checkpoint_number=step)
    self._world.barrier()
    if self._main_manager:
      self._main_manager.save(checkpoint_number=step)

  def latest_step(self):
    """Step of the newest complete checkpoint (0 if none), as rank 0 sees."""
    latest = tf.train.latest_checkpoint(self._dir) if (
        self._world.is_chief) else None
    return self._world.broadcast_object(_step_of(latest) if latest else 0)

  def restore(self, step):
    """Rank 0 restores the shared state, every rank its own input state.

    The caller then broadcasts rank 0's variables to the other ranks.
    """
    # restore(), not read(): it also takes back the managers' save_counter.
    if self._main_manager:
      self._main.restore(os.path.join(self._dir, f"ckpt-{step}")
                         ).assert_consumed()
    rank_prefix = os.path.join(self._rank_manager.directory, f"ckpt-{step}")
    if not tf.io.gfile.exists(rank_prefix + ".index"):
      raise ValueError(f"checkpoint {rank_prefix}: this rank's input state "
                       f"for step {step} is missing")
    self._rank.restore(rank_prefix).assert_consumed()


def _model_node_children(prefix):
  """{child name: node} of the checkpoint's "model" object (object graph)."""
  reader = tf.train.load_checkpoint(prefix)
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
  root = {c.local_name: c.node_id for c in graph.nodes[0].children}
  if "model" not in root:
    raise ValueError(f"checkpoint {prefix}: no model in this checkpoint")
  model = graph.nodes[root["model"]]
  return {c.local_name: graph.nodes[c.node_id] for c in model.children}, (
      graph, reader)


def stored_model(prefix, config):
  """An empty model of the class whose weights the checkpoint holds.

  BertPretrainer, BertClassifier (with the stored number of labels),
  BertSpanLabeler or BertModel, of `config`; read from the checkpoint's object graph only.
  """
  children, (graph, reader) = _model_node_children(prefix)
  if "masked_lm" in children:
    return heads.BertPretrainer(config)
  if "classifier" in children:
    kernel = next(graph.nodes[c.node_id] for c in
                  children["classifier"].children if c.local_name == "_kernel")
    shapes = reader.get_variable_to_shape_map()
    num_labels = shapes[kernel.attributes[0].checkpoint_key][1]
    return heads.BertClassifier(config, num_labels)
  if "span_outputs" in children:
    return heads.BertSpanLabeler(config)
  return bert_lib.BertModel(config)


def _restore_source(prefix, config):
  source = bert_lib.ensure_built(stored_model(prefix, config))
  status = tf.train.Checkpoint(model=source).read(prefix)
  try:
    status.expect_partial().assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(f"checkpoint {prefix}: not a {type(source).__name__} "
                     f"of this config ({e})") from None
  return source


def _keras_weights(model, path):
  bert_lib.ensure_built(model)
  model.load_weights(path)
  return name_map.LoadResult(loaded=[v.path for v in model.weights],
                             ignored=[])


def _plan_from_source(model, source, config_path):
  """name_map's load plan: `model`'s params vs the restored source's."""
  shapes = {name: p.variable.shape[::-1] if p.tf1_transposed
            else p.variable.shape for name, p in source.items()}
  # Heads the target lacks are skipped, as for Google's checkpoints.
  plan = name_map.plan_load(
      name_map.model_params(model), shapes, "tf1",
      lambda name: name.startswith(("cls/", "output_")))
  plan.problems["config mismatch"] += name_map.config_problems(
      config_path, bert_lib.backbone(model).config, "hf")
  return plan


def load_model_weights(model, path):
  """Loads the weights in a trainer checkpoint prefix into `model`.

  The checkpoint is first restored into a fresh model of its own class,
  built from the bert_config.json beside it, then copied by Google variable
  name like the other formats: heads `model` lacks are skipped, and all
  missing/mis-shaped variables are listed in one ValueError before any
  variable of `model` changes. A Keras `.weights.h5` goes to load_weights.
  """
  path = os.fspath(path)
  if path.endswith(".weights.h5"):
    return _keras_weights(model, path)
  config = bert_lib.backbone(bert_lib.ensure_built(model)).config
  config_path = os.path.join(os.path.dirname(path), CONFIG_FILE)
  stored_config = (bert_lib.BertConfig.from_json_file(config_path)
                   if os.path.exists(config_path) else config)
  source = {p.tf1_name: p for p in name_map.model_params(
      _restore_source(path, stored_config))}
  plan = _plan_from_source(model, source, config_path)
  plan.raise_if_problems(path)

  def read(name):  # The stored (Google) layout, as name_map.assign expects.
    value = source[name].variable.numpy()
    return value.T if source[name].tf1_transposed else value

  return name_map.assign(plan, read, "tf1")
