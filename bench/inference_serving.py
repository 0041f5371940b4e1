"""bench/inference.py's load test of tools/serve.py, and the bare model it is compared with.

The server runs as a child process (`python tools/serve.py`, as users run it)
on 127.0.0.1; the client is one asyncio event loop here with one keep-alive
connection per concurrent request and the requests' bytes built beforehand
(it shares the machine's cores with the server: the fewer cycles it takes,
the less of the server's figure is the client's cost), each request one
instance (TF Serving's {"instances": [...]}). A level sends `requests`
requests with `concurrency` of them in flight, after 2 x concurrency warm-up
requests that are not counted.
"""

import asyncio
import http.client
import itertools
import json
import os
import socket
import subprocess
import time

import numpy as np

from pipeline.text import tokenization

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_SECONDS = 300  # TensorFlow's import, the export's load and warm-up on a busy machine


def texts_from_records(batches, vocab_file, limit=512):
  """[(text_a, text_b or None)] decoded from the records' ids (word pieces joined)."""
  vocab = tokenization.load_vocab(vocab_file)
  specials = {tokenization.CLS_TOKEN, tokenization.SEP_TOKEN, "[PAD]"}
  texts = []
  for feed, _ in batches:
    for ids, mask, segments in zip(feed["input_ids"], feed["input_mask"], feed["segment_ids"]):
      parts = [_join(vocab[i] for i, m, s in zip(ids, mask, segments)
                     if m and s == seg and vocab[i] not in specials) for seg in (0, 1)]
      texts.append((parts[0] or ".", parts[1] or None))
      if len(texts) >= limit:
        return texts
  return texts


def _join(pieces):
  words = []
  for piece in pieces:
    if piece.startswith("##") and words:
      words[-1] += piece[2:]
    else:
      words.append(piece)
  return " ".join(words)


def instance(text):
  a, b = text
  return a if b is None else {"text_a": a, "text_b": b}


class BareModel:
  """The export's serving_default (text in), called here: what the server wraps."""

  def __init__(self, export_dir):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    self.tf = tf
    self.signature = tf.saved_model.load(export_dir).signatures["serving_default"]

  def __call__(self, text):
    return self.batch([text])

  def batch(self, texts):
    """[(text_a, text_b or None)] -> logits [B,C]: one serving_default call."""
    inputs = {"text_a": self.tf.constant([a for a, _ in texts])}
    if texts[0][1] is not None:
      inputs["text_b"] = self.tf.constant([b for _, b in texts])
    return self.signature(**inputs)["logits"].numpy()


def free_port():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


class Server:
  """tools/serve.py in a child process; start() returns at once, wait_ready() blocks."""

  def __init__(self, python, model_dir, name, log_path, flags=()):
    self.port, self.name = free_port(), name
    self.cmd = [python, os.path.join(ROOT, "tools", "serve.py"), f"--model_dir={model_dir}",
                f"--model_name={name}", "--host=127.0.0.1", f"--port={self.port}", *flags]
    self.log_path, self.proc = log_path, None

  def start(self):
    os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
    self.log = open(self.log_path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                 env=env, cwd=ROOT)
    return self

  def wait_ready(self):
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
      if self.proc.poll() is not None:
        raise RuntimeError(f"serve.py exited {self.proc.returncode}: see {self.log_path}")
      try:
        if request(self.port, "GET", "/healthz")[0] == 200:
          return self
      except OSError:
        pass
      time.sleep(0.25)
    raise RuntimeError(f"serve.py not ready after {READY_SECONDS} s: see {self.log_path}")

  def stats(self):
    return request(self.port, "GET", f"/v1/models/{self.name}/stats")[1]

  def stop(self):
    if self.proc and self.proc.poll() is None:
      self.proc.terminate()  # our own child, by its pid
      try:
        self.proc.wait(30)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait(30)
    if self.proc:
      self.log.close()


def request(port, method, path, body=None, conn=None):
  """(status, JSON answer) of one request (a new connection unless `conn`)."""
  own = conn is None
  conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
  try:
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")
  finally:
    if own:
      conn.close()


def load_level(server, texts, concurrency, requests):
  """{concurrency, requests, errors, requests_per_s, p50_ms, p99_ms, batcher}."""
  path = f"/v1/models/{server.name}:predict"
  payloads = [_post(path, {"instances": [instance(t)]}) for t in texts]
  asyncio.run(_drive(server.port, payloads, concurrency, 2 * concurrency))  # warm-up
  before = server.stats()
  start = time.perf_counter()
  results = asyncio.run(_drive(server.port, payloads, concurrency, requests))
  wall = time.perf_counter() - start
  after = server.stats()
  ms = 1e3 * np.array([s for s, _ in results])
  calls = after["model_calls"] - before["model_calls"]
  return {"concurrency": concurrency, "requests": len(results),
          "errors": sum(not ok for _, ok in results), "requests_per_s": len(results) / wall,
          "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
          "wall_seconds": wall, "model_calls": calls,
          "mean_batch_rows": (after["rows"] - before["rows"]) / calls if calls else None,
          "max_batch_rows": after["max_batch_rows"]}


def _post(path, body):
  """One request's bytes, built before the clock starts."""
  data = json.dumps(body).encode()
  return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
          f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _drive(port, payloads, concurrency, total):
  """[(seconds, ok)] of `total` requests, `concurrency` keep-alive connections each
  with one request in flight. One event loop and prebuilt bytes, so the client
  costs the shared CPU little of what the server is measured on."""
  counter = itertools.count()

  async def connection():
    out, conn = [], None
    while (k := next(counter)) < total:
      start = time.perf_counter()
      try:
        conn = conn or await asyncio.open_connection("127.0.0.1", port)
        conn[1].write(payloads[k % len(payloads)])
        ok = await _answer_ok(conn[0])
      except (OSError, ValueError, asyncio.IncompleteReadError):
        if conn:
          conn[1].close()
        conn, ok = None, False
      out.append((time.perf_counter() - start, ok))
    if conn:
      conn[1].close()
    return out

  parts = await asyncio.gather(*(connection() for _ in range(concurrency)))
  return [r for part in parts for r in part]


async def _answer_ok(reader):
  """Reads one HTTP/1.1 response; True for a 200 with one prediction."""
  head = await reader.readuntil(b"\r\n\r\n")
  lines = head.decode("latin-1").split("\r\n")
  fields = {k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:])}
  if not fields.get("content-length", "").isdigit():  # uvicorn always sends it here
    raise ValueError("a response without Content-Length")
  length = int(fields["content-length"])
  body = json.loads(await reader.readexactly(length))
  return lines[0].split(" ")[1] == "200" and len(body.get("predictions", ())) == 1


def bare_batched(model, texts, batch_sizes, seconds=4.0, warmup=3):
  """{batch: seq/s} of back-to-back serving_default calls on consecutive texts:
  what batching can gain at best on this machine, with no server at all."""
  out = {}
  for batch in batch_sizes:
    chunks = [[texts[(k + i) % len(texts)] for i in range(batch)]
              for k in range(0, 64 * batch, batch)]
    for chunk in chunks[:warmup]:
      model.batch(chunk)
    rows, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      model.batch(chunks[(rows // batch) % len(chunks)])
      rows += batch
    out[batch] = rows / (time.perf_counter() - start)
  return out


def bare_latency(model, texts, calls, warmup):
  """Batch-1 serving_default calls on the load test's texts: p50/p99 ms, seq/s."""
  for k in range(warmup):
    model(texts[k % len(texts)])
  seconds = []
  for k in range(calls):
    start = time.perf_counter()
    model(texts[k % len(texts)])
    seconds.append(time.perf_counter() - start)
  ms = 1e3 * np.asarray(seconds)
  return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
          "mean_ms": float(ms.mean()), "seq_per_s": float(1e3 / ms.mean()), "calls": calls}
