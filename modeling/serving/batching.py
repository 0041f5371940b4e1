"""Dynamic batching: concurrent requests share one model call.

Requests are split into chunks of at most max_batch_size rows and queued. One
worker coroutine takes the first chunk, then keeps adding chunks until the
batch is full or batch_timeout_ms has passed since it took the first, and runs
the model in a worker thread so the event loop keeps accepting requests. While
a batch runs, the next requests queue up: under load batches grow by
themselves, and a lone request waits at most the timeout (0, the default: not
at all; the batch is what is queued).
"""

import asyncio
import collections
import concurrent.futures
import dataclasses

import numpy as np


@dataclasses.dataclass
class Chunk:
  """Up to max_batch_size rows of one request, and where its outputs go."""
  text_a: list
  text_b: list  # None for single-text models
  future: asyncio.Future


class Batcher:
  """Queues rows and runs `run_batch(text_a, text_b) -> {name: array [n,...]}`."""

  def __init__(self, run_batch, max_batch_size, batch_timeout_ms):
    self.run_batch = run_batch
    self.max_batch_size = int(max_batch_size)
    self.timeout = batch_timeout_ms / 1000.0
    # One thread: model calls run one at a time (TensorFlow parallelizes each).
    self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
    self.queue = None
    self.held = None  # a chunk that did not fit the last batch: it opens the next
    self.worker = None
    self.stats = {"requests": 0, "rows": 0, "model_calls": 0, "max_batch_rows": 0,
                  "batch_rows": collections.Counter()}

  async def start(self):
    """Starts the worker on the running event loop (the app's lifespan)."""
    self.queue = asyncio.Queue()
    self.worker = asyncio.create_task(self.work())

  async def stop(self):
    self.worker.cancel()
    try:
      await self.worker
    except asyncio.CancelledError:
      pass
    self.executor.shutdown(wait=True)

  async def predict(self, text_a, text_b=None):
    """One request's rows -> its outputs {name: array [n,...]}, in order."""
    loop = asyncio.get_running_loop()
    chunks = []
    for start in range(0, len(text_a), self.max_batch_size):
      end = start + self.max_batch_size
      chunk = Chunk(text_a[start:end], None if text_b is None else text_b[start:end],
                    loop.create_future())
      chunks.append(chunk)
      self.queue.put_nowait(chunk)
    self.stats["requests"] += 1
    self.stats["rows"] += len(text_a)
    parts = await asyncio.gather(*(c.future for c in chunks))
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

  async def work(self):
    while True:
      await self.run(await self.collect())

  async def next_chunk(self, deadline):
    """The next queued chunk, or None once `deadline` (loop time) has passed."""
    try:
      return self.queue.get_nowait()
    except asyncio.QueueEmpty:
      remaining = deadline - asyncio.get_running_loop().time()
      if remaining <= 0:
        return None
      try:
        return await asyncio.wait_for(self.queue.get(), remaining)
      except asyncio.TimeoutError:
        return None

  async def collect(self):
    """Chunks of at most max_batch_size rows in all (the first waits for a request)."""
    first, self.held = self.held or await self.queue.get(), None
    batch, rows = [first], len(first.text_a)
    deadline = asyncio.get_running_loop().time() + self.timeout
    while rows < self.max_batch_size:
      chunk = await self.next_chunk(deadline)
      if chunk is None:
        break
      if rows + len(chunk.text_a) > self.max_batch_size:
        self.held = chunk
        break
      batch.append(chunk)
      rows += len(chunk.text_a)
    return batch

  async def run(self, batch):
    """One model call for the batch; each chunk gets its own rows (or the error)."""
    text_a = [t for c in batch for t in c.text_a]
    text_b = None if batch[0].text_b is None else [t for c in batch for t in c.text_b]
    self.count(len(text_a))
    try:
      outputs = await asyncio.get_running_loop().run_in_executor(
          self.executor, self.run_batch, text_a, text_b)
    except Exception as e:  # pylint: disable=broad-except  # the requests get a 500
      for c in batch:
        if not c.future.done():
          c.future.set_exception(e)
      return
    start = 0
    for c in batch:
      end = start + len(c.text_a)
      if not c.future.done():  # a client that went away cancelled its future
        c.future.set_result({name: value[start:end] for name, value in outputs.items()})
      start = end

  def count(self, rows):
    self.stats["model_calls"] += 1
    self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], rows)
    self.stats["batch_rows"][rows] += 1

  def stats_json(self):
    stats = dict(self.stats)
    stats["batch_rows"] = {str(k): v for k, v in sorted(stats["batch_rows"].items())}
    return stats
