"""Self-describing model directories: a head's weights, its config and a JSON card.

A task model (a classifier, a span model) is saved as one directory
  bert_config.json   the encoder's config (HF "gelu")
  <card>.json        what the head needs to be rebuilt (classifier.json, span.json)
  model.ckpt-<step>.index/.data-*   tf.train.Checkpoint(model=...) weights
  + optional extra files (an eval report),
written to a sibling temp directory and renamed in: `directory` is either the
previous complete save or the new one, also after a SIGKILL between the two
renames (recover_interrupted puts the previous one back).
"""

import glob
import json
import os
import shutil

import tensorflow as tf

from modeling.checkpoints import training as training_checkpoints
from pipeline.core import stage

CONFIG_FILE = training_checkpoints.CONFIG_FILE
WEIGHTS_PREFIX = "model.ckpt"


def previous(directory):
  return f"{os.path.abspath(directory)}.old"


def write_model_dir(model, directory, card_name, card, step=0, extra_files=None):
  """Writes `model` + `card` (JSON-able) as `directory`; returns the weights' prefix."""
  directory = os.path.abspath(directory)
  tmp = f"{directory}.tmp.{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  prefix = tf.train.Checkpoint(model=model).write(
      os.path.join(tmp, f"{WEIGHTS_PREFIX}-{step}"))
  model.config.to_json_file(os.path.join(tmp, CONFIG_FILE))
  files = dict(extra_files or {})
  files[card_name] = json.dumps(card, indent=2, sort_keys=True) + "\n"
  for name, text in files.items():
    with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
      f.write(text)
  # A fixed .old name: recover_interrupted puts it back after a kill between renames.
  stage.replace_directory(tmp, directory, previous(directory))
  return os.path.join(directory, os.path.basename(prefix))


def recover_interrupted(directory, card_name):
  """Removes a killed save's temp directories and puts back the previous save
  if the kill came between its two renames (directory missing, .old complete)."""
  for tmp in glob.glob(f"{os.path.abspath(directory)}.tmp.*"):
    shutil.rmtree(tmp, ignore_errors=True)
  old = previous(directory)
  if not os.path.exists(directory) and os.path.isfile(os.path.join(old, card_name)):
    os.replace(old, directory)


def read_card(directory, card_name, what):
  """The card of a saved model directory (ValueError if absent: not a saved `what`)."""
  path = os.path.join(directory, card_name)
  if not os.path.isfile(path):
    raise ValueError(f"{directory}: no {card_name} (not a saved {what})")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def has_card(path, card_name):
  return os.path.isdir(path) and os.path.isfile(os.path.join(path, card_name))
