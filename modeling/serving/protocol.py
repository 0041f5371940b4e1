"""TensorFlow Serving's REST predict JSON for a raw-text classifier.

Requests (https://www.tensorflow.org/tfx/serving/api_rest, "Predict API"):
  row:      {"instances": ["text", ...]}   single-text models
            {"instances": [{"text_a": "...", "text_b": "..."}, ...]}
  columnar: {"inputs": {"text_a": [...], "text_b": [...]}}, or for a
            single-text model {"inputs": ["text", ...]}
  optional "signature_name": only "serving_default" is served.
Responses:
  row:      {"predictions": [{"probabilities": [C floats], "logits": [C],
             "label_id": int, "label": "name"}, ...]}
  columnar: {"outputs": {"probabilities": [[C]...], "logits": ..., "label_id":
             [...], "label": [...]}}
Extension: the model truncates input beyond its max_seq_length word pieces; a
row prediction cut that way carries "truncated": true, and a columnar response
then holds "truncated": [bool per instance]. Clients that ignore unknown keys
(all of TF Serving's) are unaffected.

Bad requests raise RequestError(status, one-line message); the server answers
{"error": message}, TF Serving's error shape.
"""

import dataclasses
import json

from modeling.serving import model as model_lib

TOP_LEVEL = ("instances", "inputs", "signature_name")


class RequestError(Exception):
  """A request the server refuses: an HTTP status and a one-line message."""

  def __init__(self, status, message):
    super().__init__(message)
    self.status = status
    self.message = message


@dataclasses.dataclass(frozen=True)
class PredictRequest:
  text_a: list
  text_b: list  # None for single-text models
  columnar: bool


def _text(value, where):
  if not isinstance(value, str):
    raise RequestError(400, f"{where} must be a string, not {type(value).__name__}")
  if not value.strip():
    raise RequestError(400, f"{where} is empty")
  try:
    value.encode("utf-8")
  except UnicodeEncodeError:  # JSON allows lone surrogates ("\\ud800"); UTF-8 does not
    raise RequestError(400, f"{where} is not valid Unicode (a lone surrogate)") from None
  return value


def _load(body):
  try:
    request = json.loads(body)
  except (ValueError, UnicodeDecodeError) as e:
    raise RequestError(400, f"the body is not JSON: {e}") from None
  if not isinstance(request, dict):
    raise RequestError(400, "the body must be a JSON object with \"instances\" or \"inputs\"")
  unknown = sorted(set(request) - set(TOP_LEVEL))
  if unknown:
    raise RequestError(
        400, f"unknown field(s) {unknown}: expected \"instances\" or \"inputs\"")
  if "instances" in request and "inputs" in request:
    raise RequestError(
        400, "give \"instances\" (row format) or \"inputs\" (columnar), not both")
  if "instances" not in request and "inputs" not in request:
    raise RequestError(400, "missing \"instances\" (row format) or \"inputs\" (columnar)")
  signature = request.get("signature_name", model_lib.SIGNATURE)
  if signature != model_lib.SIGNATURE:
    raise RequestError(400, f"unknown signature_name {signature!r}: serving "
                       f"{model_lib.SIGNATURE!r}")
  return request


def _row(instance, i, names):
  """One instance -> its texts in `names` order."""
  if isinstance(instance, str) and len(names) == 1:
    return [_text(instance, f"instances[{i}]")]
  if not isinstance(instance, dict):
    kind = "a string or an object" if len(names) == 1 else "an object"
    raise RequestError(400, f"instances[{i}] must be {kind} with {list(names)}, not "
                       f"{type(instance).__name__}")
  if sorted(instance) != sorted(names):
    raise RequestError(400, f"instances[{i}] has fields {sorted(instance)}; the model "
                       f"takes {list(names)}")
  return [_text(instance[n], f"instances[{i}].{n}") for n in names]


def _columns(inputs, names):
  """The columnar "inputs" -> {name: list of texts}."""
  if isinstance(inputs, list) and len(names) == 1:
    inputs = {names[0]: inputs}
  if not isinstance(inputs, dict) or sorted(inputs) != sorted(names):
    got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
    raise RequestError(400, f"\"inputs\" must be an object with {list(names)}; got {got}")
  for n in names:
    if not isinstance(inputs[n], list):
      raise RequestError(400, f"inputs.{n} must be a list of strings")
  if len({len(inputs[n]) for n in names}) != 1:
    raise RequestError(400, f"inputs {list(names)} must have the same length")
  return {n: [_text(v, f"inputs.{n}[{i}]") for i, v in enumerate(inputs[n])] for n in names}


def _check_count(count, max_instances):
  if count == 0:
    raise RequestError(400, "no instances")
  if count > max_instances:
    raise RequestError(400, f"{count} instances; at most {max_instances} per request")


def parse_predict(body, names, max_instances):
  """Request bytes -> PredictRequest for a model taking the text inputs `names`."""
  request = _load(body)
  if "instances" in request:
    instances = request["instances"]
    if not isinstance(instances, list):
      raise RequestError(400, "\"instances\" must be a list")
    _check_count(len(instances), max_instances)
    rows = [_row(x, i, names) for i, x in enumerate(instances)]
    columns = {n: [r[k] for r in rows] for k, n in enumerate(names)}
  else:
    columns = _columns(request["inputs"], names)
    _check_count(len(columns[names[0]]), max_instances)
  return PredictRequest(columns["text_a"], columns.get("text_b"), "inputs" in request)


def format_predictions(outputs, columnar):
  """{name: array [B,...]} (+ "truncated" bool [B]) -> the response JSON object."""
  truncated = [bool(x) for x in outputs["truncated"]]
  columns = {n: outputs[n].tolist() for n in model_lib.OUTPUTS}
  if columnar:
    if any(truncated):
      columns["truncated"] = truncated
    return {"outputs": columns}
  predictions = []
  for i, cut in enumerate(truncated):
    row = {n: columns[n][i] for n in model_lib.OUTPUTS}
    if cut:
      row["truncated"] = True
    predictions.append(row)
  return {"predictions": predictions}
