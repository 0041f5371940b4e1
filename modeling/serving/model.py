"""A raw-text classifier export (modeling/evaluation/task_export.py), loaded to serve.

Shape legend: B=batch, C=number of labels, T=word pieces.

The export's own files say what it is: its SignatureDefs (read from
saved_model.pb, which is also what TF Serving's /metadata reports) and
task.json (labels, pair, max_seq_length, lower-casing). Anything else is refused
at start-up with one line, before a client sees it.
"""

import dataclasses
import json
import os

import numpy as np

from modeling.evaluation import task_export
from modeling.evaluation import serving_layout as layout
from pipeline.core.errors import InputError

SIGNATURE = "serving_default"
OUTPUTS = ("probabilities", "logits", "label_id", "label")
TRUNCATED = "truncated"  # bool [B]: the input was cut to max_seq_length
TEXT_INPUTS = {False: ("text_a",), True: ("text_a", "text_b")}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo:
  """What clients learn about the served model (status line, metadata)."""
  export_dir: str
  version: int
  labels: tuple
  pair: bool
  max_seq_length: int
  inputs: tuple  # text input names of serving_default, in call order
  signature_defs: dict  # TF Serving's signature_def JSON


def _signature_defs(export_dir):
  """{name: SignatureDef as TF Serving's JSON} straight from saved_model.pb."""
  # pylint: disable=import-outside-toplevel
  from google.protobuf import json_format
  from tensorflow.core.protobuf import saved_model_pb2
  proto = saved_model_pb2.SavedModel()
  try:
    with open(os.path.join(export_dir, layout.SAVED_MODEL_FILE), "rb") as f:
      proto.ParseFromString(f.read())
  except Exception as e:  # pylint: disable=broad-except  # protobuf's DecodeError
    raise InputError(export_dir, f"unreadable saved_model.pb: {e}") from None
  graph = proto.meta_graphs[0] if proto.meta_graphs else None
  if graph is None:
    raise InputError(export_dir, "saved_model.pb has no MetaGraph")
  return {name: json_format.MessageToDict(sig, preserving_proto_field_name=True,
                                          always_print_fields_with_no_presence=True)
          for name, sig in graph.signature_def.items()}


def _read_task(export_dir):
  path = os.path.join(export_dir, task_export.TASK_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      task = json.load(f)
    return {"labels": tuple(str(x) for x in task["labels"]), "pair": bool(task["pair"]),
            "max_seq_length": int(task["max_seq_length"]),
            "do_lower_case": bool(task["do_lower_case"])}
  except OSError:
    raise InputError(export_dir, f"no {task_export.TASK_FILE}: not a raw-text classifier "
                     "export (tools/export.py --input_dir=...)") from None
  except (ValueError, KeyError, TypeError) as e:
    raise InputError(path, f"malformed: {e!r}") from None


def check_signature(export_dir, defs, pair):
  """The serving signature takes the task's text inputs and gives our outputs."""
  if SIGNATURE not in defs:
    raise InputError(export_dir, f"no {SIGNATURE} signature (has {sorted(defs)})")
  inputs, outputs = defs[SIGNATURE]["inputs"], defs[SIGNATURE]["outputs"]
  expected = TEXT_INPUTS[pair]
  if sorted(inputs) != sorted(expected) or any(
      inputs[n]["dtype"] != "DT_STRING" for n in expected):
    raise InputError(export_dir, f"{SIGNATURE} takes {sorted(inputs)}, not the raw text "
                     f"inputs {list(expected)} (string) of a classifier export")
  missing = [n for n in OUTPUTS + (TRUNCATED,) if n not in outputs]
  if missing:
    raise InputError(export_dir, f"{SIGNATURE} lacks the outputs {missing} (exports "
                     "made before they were added: run tools/export.py again)")


def read_info(model_dir):
  """ModelInfo of the export `model_dir` resolves to, without loading TensorFlow's graph."""
  export_dir, version = layout.resolve_model_dir(model_dir)
  defs = _signature_defs(export_dir)
  task = _read_task(export_dir)
  check_signature(export_dir, defs, task["pair"])
  return ModelInfo(export_dir=export_dir, version=version, labels=task["labels"],
                   pair=task["pair"], max_seq_length=task["max_seq_length"],
                   inputs=TEXT_INPUTS[task["pair"]], signature_defs=defs)


def _first_line(error):
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


class ServedModel:
  """The loaded serving signature.

  bucket_rows > 0: a batch of at least twice that many rows is sorted by length
  (characters, a proxy known before tokenizing) and run bucket_rows rows per
  call. serving_default pads each call to its longest row and masks the padding
  (outputs unchanged), so similar lengths together do less padded work than one
  call padded to the batch's longest row; the rows come back in request order.
  """

  def __init__(self, model_dir, bucket_rows=0):
    """Loads and warms up (traces) the export, so the first request is not slow."""
    self.bucket_rows = int(bucket_rows)
    self.info = read_info(model_dir)
    export_dir = self.info.export_dir
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  pylint: disable=unused-import  # the graph's ops
    self._tf = tf
    try:
      self._signature = tf.saved_model.load(export_dir).signatures[SIGNATURE]
      self.predict(["warm up"] * 2, ["warm up"] * 2 if self.info.pair else None)
    except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
      raise InputError(export_dir, f"cannot load: {_first_line(e)}") from None

  def predict(self, text_a, text_b=None):
    """Lists of str [B] -> {output: array [B,...]} plus "truncated" bool [B]
    (counted in the graph, on the word pieces the model saw).

    Runs in the batcher's worker thread: TensorFlow releases the GIL, so the
    event loop keeps accepting requests meanwhile.
    """
    if not self.bucket_rows or len(text_a) < 2 * self.bucket_rows:
      return self._call(text_a, text_b)
    chars = [len(a) + (len(text_b[i]) if text_b is not None else 0)
             for i, a in enumerate(text_a)]
    order = np.argsort(chars, kind="stable")  # [B]: the rows, shortest first
    parts = [self._call([text_a[i] for i in rows],
                        None if text_b is None else [text_b[i] for i in rows])
             for rows in np.array_split(order, -(-len(order) // self.bucket_rows))]
    back = np.argsort(order)  # [B]: where each request row sits in the sorted order
    return {name: np.concatenate([p[name] for p in parts])[back] for name in parts[0]}

  def _call(self, text_a, text_b):
    """One serving_default call on the rows as given."""
    texts = {"text_a": self._tf.constant(text_a, self._tf.string)}
    if text_b is not None:
      texts["text_b"] = self._tf.constant(text_b, self._tf.string)
    outputs = self._signature(**texts)
    result = {name: outputs[name].numpy() for name in OUTPUTS}
    result["label"] = np.array([x.decode("utf-8") for x in result["label"]], dtype=object)
    result[TRUNCATED] = outputs[TRUNCATED].numpy()
    return result
