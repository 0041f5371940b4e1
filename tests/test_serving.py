"""tools/serve.py: TF Serving's REST API over tiny raw-text classifier exports.

Each server runs uvicorn in a thread of this process on a socket bound to
127.0.0.1 (port chosen by the OS); every wait is bounded. Predictions are
compared with calling the SavedModel's serving_default directly.
"""

import concurrent.futures
import contextlib
import json
import os
import shutil
import socket
import string
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from modeling.evaluation import serving_layout as layout
from modeling.serving import model as model_lib
from modeling.serving import server
from pipeline.core.errors import ConfigError, InputError
from pipeline.text import tokenization
from tests.conftest import ROOT, run_tool, tool_env

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_text")
uvicorn = pytest.importorskip("uvicorn")

WORDS = "river valley town people music great awful film plot actor".split()
SEQ = 16  # max_seq_length of the exports: 14 word pieces of one text fit
LIMITS = dict(max_batch_size=8, batch_timeout_ms=30, max_request_bytes=4096,
              max_instances=20)


def _write_vocab(path):
  tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.punctuation)
  tokens += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(tokens + WORDS) + "\n")
  return str(path), len(tokens + WORDS)


def _export(directory, vocab, vocab_size, pair, seed):
  # pylint: disable=import-outside-toplevel
  import keras
  from modeling.evaluation import task_export
  from modeling.models import classification
  from modeling.networks import bert
  keras.utils.set_random_seed(seed)
  config = bert.BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32,
                           max_position_embeddings=32, initializer_range=0.5)
  model = classification.build_classifier(config, 2)
  return task_export.export_text_classifier(model, str(directory), vocab, True, SEQ,
                                            ["neg", "pos"], pair)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  base = tmp_path_factory.mktemp("serving")
  vocab, size = _write_vocab(base / "vocab.txt")
  return {"base": base, "single": _export(base / "single", vocab, size, False, 1),
          "pair": _export(base / "pair", vocab, size, True, 2)}


@contextlib.contextmanager
def _serving(app, log_level="warning"):
  """uvicorn serving `app` in a thread on 127.0.0.1 (a free port); yields the URL."""
  sock = server.bind("127.0.0.1", 0)
  uv = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
  thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
  thread.start()
  for _ in range(200):
    if uv.started:
      break
    time.sleep(0.05)
  assert uv.started
  try:
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
  finally:
    uv.should_exit = True
    thread.join(10)
    sock.close()


@contextlib.contextmanager
def _running(model_dir, **settings):
  """A server of model_dir with LIMITS (or `settings`); yields its URL and app."""
  config = server.ServeConfig(model_dir=model_dir, **{**LIMITS, **settings})
  app = server.create_app(model_lib.ServedModel(model_dir), config)
  with _serving(app) as url:
    yield url, app


@pytest.fixture(scope="module")
def single(exports):
  with _running(exports["single"]) as running:
    yield running


@pytest.fixture(scope="module")
def direct(exports):
  """texts -> serving_default's outputs as numpy, straight from the SavedModel."""
  signatures = {k: tf.saved_model.load(exports[k]).signatures["serving_default"]
                for k in ("single", "pair")}

  def call(kind, **texts):
    out = signatures[kind](**{k: tf.constant(v) for k, v in texts.items()})
    return {k: v.numpy() for k, v in out.items()}
  return call


def _http(url, body=None, method=None):
  """(status, parsed JSON body) of one request."""
  data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
  request = urllib.request.Request(url, data=data, method=method)
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _texts(n, seed=0, words=(2, 8)):
  rnd = np.random.default_rng(seed)
  return [" ".join(rnd.choice(WORDS, rnd.integers(*words))).capitalize() + "."
          for _ in range(n)]


def _assert_rows_equal(predictions, expected):
  np.testing.assert_allclose([p["probabilities"] for p in predictions],
                             expected["probabilities"], atol=1e-6)
  np.testing.assert_allclose([p["logits"] for p in predictions], expected["logits"],
                             atol=1e-5)
  assert [p["label_id"] for p in predictions] == expected["label_id"].tolist()
  assert [p["label"] for p in predictions] == [x.decode() for x in expected["label"]]


def test_status_metadata_and_health(single):
  url, _ = single
  status = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}
  assert _http(f"{url}/v1/models/model") == (200, status)
  assert _http(f"{url}/v1/models/model/versions/1") == (200, status)
  code, meta = _http(f"{url}/v1/models/model/metadata")
  assert code == 200 and meta["model_spec"] == {"name": "model", "signature_name": "",
                                                "version": "1"}
  sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
  assert sig["method_name"] == "tensorflow/serving/predict"
  assert list(sig["inputs"]) == ["text_a"] and sig["inputs"]["text_a"]["dtype"] == "DT_STRING"
  assert sig["inputs"]["text_a"]["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}],
                                                      "unknown_rank": False}
  assert set(sig["outputs"]) == {"probabilities", "logits", "label_id", "label", "truncated"}
  assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
  assert [d["size"] for d in sig["outputs"]["probabilities"]["tensor_shape"]["dim"]] == [
      "-1", "2"]
  assert _http(f"{url}/v1/models/model/versions/1/metadata")[1] == meta
  assert _http(f"{url}/healthz") == _http(f"{url}/v1/health") == (200, {"status": "ok"})


def test_predict_row_and_columnar_equal_the_saved_model(single, direct):
  url, _ = single
  texts = _texts(6)
  expected = direct("single", text_a=texts)
  code, rows = _http(f"{url}/v1/models/model:predict", {"instances": texts})
  assert code == 200 and list(rows) == ["predictions"]
  _assert_rows_equal(rows["predictions"], expected)
  assert all("truncated" not in p for p in rows["predictions"])
  objects = _http(f"{url}/v1/models/model/versions/1:predict",
                  {"instances": [{"text_a": t} for t in texts],
                   "signature_name": "serving_default"})
  assert objects == (200, rows)
  for inputs in ({"text_a": texts}, texts):
    code, columns = _http(f"{url}/v1/models/model:predict", {"inputs": inputs})
    assert code == 200 and list(columns) == ["outputs"]
    out = columns["outputs"]
    assert set(out) == {"probabilities", "logits", "label_id", "label"}
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], atol=1e-6)
    assert out["label"] == [x.decode() for x in expected["label"]]


def test_concurrent_requests_are_answered_and_batched(single, direct):
  url, app = single
  texts = _texts(32, seed=1)
  expected = direct("single", text_a=texts)
  before = dict(app.state.batcher.stats)
  barrier = threading.Barrier(32, timeout=30)

  def one(text):
    barrier.wait()
    return _http(f"{url}/v1/models/model:predict", {"instances": [text]})

  with concurrent.futures.ThreadPoolExecutor(32) as pool:
    answers = list(pool.map(one, texts))
  assert [code for code, _ in answers] == [200] * 32
  _assert_rows_equal([body["predictions"][0] for _, body in answers], expected)
  code, stats = _http(f"{url}/v1/models/model/stats")
  assert code == 200 and stats["requests"] - before["requests"] == 32
  calls = stats["model_calls"] - before["model_calls"]
  assert calls < 32, stats  # requests shared model calls
  assert stats["max_batch_rows"] <= LIMITS["max_batch_size"]


def test_length_buckets_return_the_rows_in_request_order(exports, direct):
  """A 13-row batch in calls of 3 rows sorted by length: every row's outputs are
  serving_default's on the whole batch at once (padding is masked)."""
  texts = _texts(12, seed=5, words=(1, 12)) + [LONG]
  expected = direct("single", text_a=texts)
  served = model_lib.ServedModel(exports["single"], bucket_rows=3)
  out = served.predict(texts)
  np.testing.assert_allclose(out["logits"], expected["logits"], atol=1e-5)
  assert out["label"].tolist() == [x.decode() for x in expected["label"]]
  assert out["truncated"].tolist() == [False] * 12 + [True]
  a, b = _texts(6, seed=6, words=(1, 9)), _texts(6, seed=7, words=(1, 9))
  pair = model_lib.ServedModel(exports["pair"], bucket_rows=2).predict(a, b)
  np.testing.assert_allclose(pair["logits"], direct("pair", text_a=a, text_b=b)["logits"],
                             atol=1e-5)


def test_big_request_is_split_into_max_batches(single, direct):
  url, app = single
  texts = _texts(20, seed=2)
  before = app.state.batcher.stats["model_calls"]
  code, rows = _http(f"{url}/v1/models/model:predict", {"instances": texts})
  assert code == 200
  _assert_rows_equal(rows["predictions"], direct("single", text_a=texts))
  assert app.state.batcher.stats["model_calls"] - before >= 3  # 8 + 8 + 4 rows
  assert app.state.batcher.stats["max_batch_rows"] <= LIMITS["max_batch_size"]


LONG = " ".join(["music"] * 30)  # 30 word pieces > SEQ - 2
BAD = [  # (method, path suffix, body, status, words of the error)
    ("POST", ":predict", b"{not json", 400, "not JSON"),
    ("POST", ":predict", [], 400, "JSON object"),
    ("POST", ":predict", {}, 400, "missing"),
    ("POST", ":predict", {"instance": ["a"]}, 400, "unknown field"),
    ("POST", ":predict", {"instances": ["a"], "inputs": ["a"]}, 400, "not both"),
    ("POST", ":predict", {"instances": "a film"}, 400, "must be a list"),
    ("POST", ":predict", {"instances": [3]}, 400, "instances[0] must be"),
    ("POST", ":predict", {"instances": [{"text": "a"}]}, 400, "has fields ['text']"),
    ("POST", ":predict", {"instances": [{"text_a": 3}]}, 400, "must be a string"),
    ("POST", ":predict", {"instances": ["film", "  "]}, 400, "instances[1] is empty"),
    ("POST", ":predict", {"instances": []}, 400, "no instances"),
    ("POST", ":predict", b'{"instances": ["a\\ud800"]}', 400, "lone surrogate"),
    ("POST", ":predict", {"instances": ["a"] * 21}, 400, "at most 20"),
    ("POST", ":predict", {"inputs": {"text_b": ["a"]}}, 400, "must be an object with"),
    ("POST", ":predict", {"inputs": {"text_a": [""]}}, 400, "inputs.text_a[0] is empty"),
    ("POST", ":predict", {"instances": ["a"], "signature_name": "encoded"}, 400,
     "signature_name"),
    ("POST", ":predict", {"instances": ["a" * 5000]}, 413, "at most 4096"),
    ("POST", ":classify", {"instances": ["a"]}, 404, "unsupported"),
    ("GET", ":predict", None, 405, "use POST"),
    ("POST", "", {"instances": ["a"]}, 405, "use GET"),
    ("DELETE", "/metadata", None, 405, "use GET"),
    ("GET", "/versions/2", None, 404, "Specific(model, 2)"),
]


@pytest.mark.parametrize("method,suffix,body,status,words", BAD)
def test_bad_requests_get_4xx_with_one_line(single, method, suffix, body, status, words):
  url, _ = single
  code, answer = _http(f"{url}/v1/models/model{suffix}", body, method)
  assert code == status and list(answer) == ["error"], answer
  assert words in answer["error"] and "\n" not in answer["error"], answer


@pytest.mark.parametrize("path", ["/v1/models/other", "/v1/models/other:predict",
                                  "/v1/models/model/labels/x", "/nowhere"])
def test_unknown_models_and_paths_are_404(single, path):
  url, _ = single
  body = {"instances": ["a"]} if path.endswith(":predict") else None
  code, answer = _http(f"{url}{path}", body)
  assert code == 404 and list(answer) == ["error"], answer


class _FailingModel:
  """The export's info, and a model call that fails (say, out of memory)."""

  def __init__(self, model_dir):
    self.info = model_lib.read_info(model_dir)

  def predict(self, text_a, text_b=None):
    raise RuntimeError(f"out of memory\nat {len(text_a)} rows {text_b}")


def test_a_failed_model_call_is_a_one_line_500(exports):
  app = server.create_app(_FailingModel(exports["single"]),
                          server.ServeConfig(model_dir=exports["single"], **LIMITS))
  with _serving(app, log_level="critical") as url:
    assert _http(f"{url}/v1/models/model:predict", {"instances": ["a", "b"]}) == (
        500, {"error": "internal error: RuntimeError: out of memory"})
    with pytest.raises(ConfigError, match="--port"):
      server.bind("127.0.0.1", int(url.rsplit(":", 1)[1]))  # in use


def test_truncation_is_flagged(single, direct, exports):
  url, app = single
  texts = ["great film", LONG, " ".join(["music"] * (SEQ - 2))]  # the last just fits
  code, rows = _http(f"{url}/v1/models/model:predict", {"instances": texts})
  assert code == 200
  assert [p.get("truncated", False) for p in rows["predictions"]] == [False, True, False]
  _assert_rows_equal(rows["predictions"], direct("single", text_a=texts))
  code, columns = _http(f"{url}/v1/models/model:predict", {"inputs": texts})
  assert columns["outputs"]["truncated"] == [False, True, False]
  pieces = tokenization.BertTokenizer(os.path.join(exports["single"], "vocab.txt"),
                                     True).encode_batch(texts)
  assert [len(p) for p in pieces] == [2, 30, SEQ - 2]
  del app


def test_pair_task(exports, direct):
  a, b = _texts(5, seed=3, words=(2, 5)), _texts(5, seed=4, words=(2, 5))
  b[2] = LONG
  expected = direct("pair", text_a=a, text_b=b)
  with _running(exports["pair"]) as (url, _):
    code, rows = _http(f"{url}/v1/models/model:predict",
                       {"instances": [{"text_a": x, "text_b": y} for x, y in zip(a, b)]})
    assert code == 200
    _assert_rows_equal(rows["predictions"], expected)
    assert [p.get("truncated", False) for p in rows["predictions"]] == [
        False, False, True, False, False]
    code, columns = _http(f"{url}/v1/models/model:predict",
                          {"inputs": {"text_a": a, "text_b": b}})
    np.testing.assert_allclose(columns["outputs"]["probabilities"],
                               expected["probabilities"], atol=1e-6)
    code, answer = _http(f"{url}/v1/models/model:predict", {"instances": ["only a"]})
    assert code == 400 and "must be an object" in answer["error"]
    code, meta = _http(f"{url}/v1/models/model/metadata")
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(sig["inputs"]) == ["text_a", "text_b"]


def test_versioned_layout_serves_the_highest_version(exports, tmp_path):
  base = tmp_path / "models"
  for version in (1, 3):
    shutil.copytree(exports["single"], layout.versioned_export_dir(str(base), version))
  os.makedirs(base / "7" / "variables")  # no saved_model.pb: not a version
  assert layout.resolve_model_dir(str(base)) == (str(base / "3"), 3)
  assert layout.resolve_model_dir(exports["single"]) == (exports["single"], 1)
  with _running(str(base), model_name="clf") as (url, _):
    code, status = _http(f"{url}/v1/models/clf")
    assert code == 200 and status["model_version_status"][0]["version"] == "3"
    assert _http(f"{url}/v1/models/clf/versions/3:predict", {"instances": ["film"]})[0] == 200
    assert _http(f"{url}/v1/models/clf/versions/1")[0] == 404


@pytest.mark.parametrize("version", [0, -1, "1", True, 1.0])
def test_versioned_export_dir_refuses_bad_versions(version):
  with pytest.raises(ConfigError):
    layout.versioned_export_dir("/tmp/x", version)


@pytest.mark.parametrize("settings", [{"model_name": "a/b"}, {"max_batch_size": 0},
                                      {"port": 70000}, {"batch_timeout_ms": -1},
                                      {"max_request_bytes": 0}, {"http": "nginx"},
                                      {"loop": "trio"}, {"bucket_rows": -1}])
def test_bad_settings_are_config_errors(settings):
  with pytest.raises(ConfigError):
    server.ServeConfig(model_dir="x", **settings)


def test_an_explicit_parser_or_loop_must_be_installed(monkeypatch):
  monkeypatch.setattr(server.importlib.util, "find_spec", lambda name: None)
  for settings in ({"http": "httptools"}, {"loop": "uvloop"}):
    with pytest.raises(ConfigError, match="not installed"):
      server.ServeConfig(model_dir="x", **settings)
  server.ServeConfig(model_dir="x", http="h11", loop="asyncio")  # stdlib / uvicorn's own


def test_bad_model_dirs_are_input_errors(exports, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  no_task = tmp_path / "no_task"
  shutil.copytree(exports["single"], no_task)
  os.remove(no_task / "task.json")
  for directory, words in ((empty, "neither a SavedModel"), (no_task, "no task.json"),
                           (tmp_path / "absent", "no such directory")):
    with pytest.raises(InputError, match=words):
      model_lib.read_info(str(directory))
  # An export from before serving_default said which inputs it cut: re-export.
  defs = model_lib.read_info(exports["single"]).signature_defs
  del defs["serving_default"]["outputs"]["truncated"]
  with pytest.raises(InputError, match=r"lacks the outputs \['truncated'\].*tools/export.py"):
    model_lib.check_signature(exports["single"], defs, False)


def test_tool_refuses_a_bad_model_dir_in_one_line(tmp_path):
  proc = run_tool("serve", f"--model_dir={tmp_path}", check=False)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines[-1] == (f"error: {tmp_path}: neither a SavedModel (saved_model.pb) nor a "
                       "directory of numeric version subdirectories holding one"), proc.stderr
  assert "Traceback" not in proc.stderr


def test_tool_serves(exports):
  import subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "serve.py"),
                           f"--model_dir={exports['single']}", "--model_name=sst",
                           f"--port={port}"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=tool_env())
  try:
    for _ in range(240):  # start-up: TensorFlow import, load, warm-up
      try:
        code, status = _http(f"http://127.0.0.1:{port}/v1/models/sst")
        break
      except (urllib.error.URLError, ConnectionError):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.25)
    assert code == 200 and status["model_version_status"][0]["state"] == "AVAILABLE"
  finally:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
  assert out.startswith("serve: sst version 1 (") and f"127.0.0.1:{port}" in out, out
