"""A process pool for the data stages that fails fast instead of hanging.

multiprocessing.Pool waits forever for a task whose worker died (OOM kill) or
whose exception cannot be unpickled, and `close(); join()` after an error still
runs every queued task. `imap_unordered` here runs on concurrent.futures, which
reports a dead worker (BrokenProcessPool), and cancels the queued tasks on the
first error, which it re-raises in the caller unchanged (so a worker's InputError
is the tool's one-line error).
"""

import concurrent.futures
import multiprocessing


def imap_unordered(fn, items, num_workers, initializer=None):
  """Yields fn(item) for each of `items` as they finish.

  Runs in this process with one worker or at most one item (no spawn cost),
  else in `num_workers` spawned processes. fn, items and results must pickle.
  """
  items = list(items)
  if num_workers <= 1 or len(items) <= 1:
    yield from map(fn, items)  # initializer is for workers (e.g. one thread each)
    return
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(
      min(num_workers, len(items)), mp_context=context, initializer=initializer) as pool:
    futures = [pool.submit(fn, item) for item in items]
    try:
      for future in concurrent.futures.as_completed(futures):
        yield future.result()
    finally:
      # Queued tasks are dropped; only those already running finish (bounded).
      pool.shutdown(wait=True, cancel_futures=True)
