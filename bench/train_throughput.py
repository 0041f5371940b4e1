"""Benchmark of pretraining throughput: sequences/s, model FLOPs, input cost.

  .venv/bin/python bench/train_throughput.py [--work_dir /tmp/bench_train]

At seq 128 (20 masked positions, vocab 30,522) for BERT-base and the 4-layer,
312-wide student config, with LAMB and the trainer of tools/pretrain.py:
- sequences/s in one process and under `mpirun -np 2` (Horovod, same global
  batch, one TF thread per rank), in float32 and mixed bfloat16;
- model FLOPs per sequence and the achieved fraction of the dense matmul rate
  measured here (tf.matmul 2048^3, float32 and bfloat16, both cores);
- step time with a synthetic in-memory batch vs TFRecords through
  pipeline/inputs/pretraining_dataset.py (records written here with pipeline.records.tfrecord).
Each measurement is a fresh process; the first step (tracing) is not timed.
The machine is shared: every run records the 1-minute load average before and
after it and the matmul rate measured by its own process(es) just before
training (fraction_of_matmul_rate_at_start); the rate is also measured before
and after all runs (fraction_of_matmul_rate uses the higher figure).
Writes bench/results/train_throughput.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from pipeline.core import startup  # noqa: E402  pylint: disable=wrong-import-position
startup.quiet_tensorflow()  # no CUDA start-up noise on a CPU-only machine

import numpy as np  # noqa: E402  pylint: disable=wrong-import-position

from modeling.networks import bert  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.records import schema  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.records import tfrecord

S, P, VOCAB = 128, 20, 30522
MODELS = {"bert_base": dict(config="bert_base", batch=8, steps=5),
          "4l_312d": dict(config="student_4l_312d", batch=32, steps=10)}
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2",
          "-bind-to", "none", "-map-by", "slot",
          "-x", "OMPI_MCA_mpi_yield_when_idle=1"]
FLOPS_FORMULA = (
    "training FLOPs/seq = 3 x forward (backward = 2 x forward); forward = "
    "2*S*L*(4H^2 + 2HI) [dense layers] + 2*L*2*S^2*H [QK^T and PV] + "
    "2*P*(H^2 + H*V) [MLM transform + tied decoder on P positions] + "
    "2*(H^2 + 2H) [pooler + NSP]; lookups, LayerNorm, softmax, GELU and bias "
    "adds are not counted")


def flops_per_sequence(c):
  """Training FLOPs of one sequence (FLOPS_FORMULA), from a BertConfig."""
  h, i, v, layers = (c.hidden_size, c.intermediate_size, c.vocab_size,
                     c.num_hidden_layers)
  forward = (2 * S * layers * (4 * h * h + 2 * h * i) +
             2 * layers * 2 * S * S * h + 2 * P * (h * h + h * v) +
             2 * (h * h + 2 * h))
  return 3 * forward


def write_records(directory, files=4, per_file=256, seed=0):
  """Random but well-formed pretraining records (the pipeline's encoder)."""
  rng = np.random.default_rng(seed)
  dtypes = {f.name: f.dtype for f in schema.PRETRAINING_FEATURES}
  os.makedirs(os.path.join(directory, "train"), exist_ok=True)
  for k in range(files):
    positions = np.sort(np.stack([rng.choice(np.arange(1, S), P, False)
                                  for _ in range(per_file)]), axis=1)
    columns = {
        "input_ids": rng.integers(0, VOCAB, (per_file, S)),
        "input_mask": np.ones((per_file, S), np.int64),
        "segment_ids": (np.arange(S)[None] >= S // 2).repeat(per_file, 0),
        "masked_lm_positions": positions,
        "masked_lm_ids": rng.integers(0, VOCAB, (per_file, P)),
        "masked_lm_weights": np.ones((per_file, P), np.float32),
        "next_sentence_labels": rng.integers(0, 2, (per_file, 1))}
    path = os.path.join(directory, "train", f"part-{k:05d}.tfrecord")
    with tfrecord.TFRecordWriter(path) as writer:
      writer.write_batch(*tfrecord.encode_examples(columns, dtypes))
  return directory


# --- Worker side (a fresh process per measurement) -------------------------


def matmul_rate(dtype, n=2048, repeats=8):
  """GFLOP/s of an n^3 tf.matmul in this process (its TF threads)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  a = tf.cast(tf.random.normal([n, n]), dtype)
  tf.matmul(a, a).numpy()  # Warm up (oneDNN primitive creation).
  start = time.perf_counter()
  for _ in range(repeats):
    result = tf.matmul(a, a)
  result.numpy()
  return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def matmul_rates():
  return {dtype: matmul_rate(dtype) for dtype in ("float32", "bfloat16")}


def train_steps(spec):
  """Runs 1 + spec["steps"] training steps; returns rank 0's timings."""
  # pylint: disable=import-outside-toplevel  (workers only)
  import keras
  from modeling.models import heads
  from modeling.training import optimization
  from modeling.training import pretraining
  from modeling.training import trainer
  from pipeline.core import world as world_lib
  world = world_lib.initialize(world_lib.launched_by_mpi())
  # The machine's matmul rate right now (all ranks at once, summed): the
  # machine is shared, so fractions are taken against this figure.
  dtype = "bfloat16" if spec["precision"] == "bf16" else "float32"
  rate_now = float(world.allreduce_sum([matmul_rate(dtype)])[0])
  keras.utils.set_random_seed(world.rank)
  config = bert.load_config(spec["config"])
  model = bert.ensure_built(heads.BertPretrainer(
      config, dtype=optimization.PRECISION_POLICIES[spec["precision"]]))
  optimizer = optimization.create_optimizer("lamb", 1e-4,
                                            model.trainable_variables)
  data = _input(spec, world)
  input_rate = _input_rate(data, spec["batch"] // world.size)
  steps = 1 + spec["steps"]
  loop = trainer.Trainer(model, optimizer, pretraining.PretrainingTask(),
                         trainer.TrainerConfig(steps, spec["batch"],
                                               log_every_steps=10 ** 6),
                         world=world, stream=open(os.devnull, "w"))
  summary = loop.train(data)
  return world.is_chief, dict(summary, matmul_gflops_at_start=rate_now,
                              input_sequences_per_second=input_rate)


def _input(spec, world):
  from pipeline.inputs import pretraining_dataset  # pylint: disable=import-outside-toplevel
  micro = spec["batch"] // world.size
  if spec["data"] == "synthetic":
    return pretraining_dataset.synthetic_dataset(micro, S, P, VOCAB, seed=world.rank)
  return pretraining_dataset.train_dataset(spec["records"], micro, S, P, 1, world.rank,
                               world.size)


def _input_rate(data, micro_batch, batches=40):
  """Sequences/s the input pipeline alone delivers to one rank."""
  iterator = iter(data)
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return round(batches * micro_batch / (time.perf_counter() - start), 1)


def worker(spec):
  if spec["kind"] == "matmul":
    print(json.dumps(matmul_rates()))
    return
  is_chief, summary = train_steps(spec)
  if is_chief:
    print(json.dumps(summary))


# --- Driver ---------------------------------------------------------------------


def run_worker(spec, ranks=1):
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
  if ranks > 1:
    cmd = MPIRUN + cmd
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  start = time.monotonic()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        check=False)
  if proc.returncode:
    raise RuntimeError(f"{spec} failed:\n{proc.stderr[-3000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  print(f"  {spec.get('model', 'matmul')} {spec.get('precision', '')} "
        f"{spec.get('data', '')} x{ranks}: {result} "
        f"({time.monotonic() - start:.0f}s)", file=sys.stderr, flush=True)
  return result


def measure(name, precision, data, ranks, records):
  """One training measurement -> its row of the results."""
  model = MODELS[name]
  spec = dict(kind="train", model=name, config=model["config"],
              batch=model["batch"], steps=model["steps"], precision=precision,
              data=data, records=records)
  load_before = os.getloadavg()[0]
  summary = run_worker(spec, ranks)
  load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
  flops = flops_per_sequence(bert.load_config(model["config"]))
  seq_s = summary["sequences_per_second"]
  return dict(model=name, precision=precision, data=data, ranks=ranks,
              global_batch=model["batch"], timed_steps=model["steps"],
              step_seconds=round(1.0 / summary["steps_per_second"], 4),
              sequences_per_second=seq_s,
              achieved_gflops=round(flops * seq_s / 1e9, 2),
              input_sequences_per_second=summary["input_sequences_per_second"],
              matmul_gflops_at_start=round(summary["matmul_gflops_at_start"], 1),
              fraction_of_matmul_rate_at_start=round(
                  flops * seq_s / 1e9 / summary["matmul_gflops_at_start"], 4),
              load_average_before_after=load)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--work_dir", default="/tmp/bench_train")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(json.loads(args.worker))
  started = time.monotonic()
  records = write_records(os.path.join(args.work_dir, "records"))
  matmul = [run_worker({"kind": "matmul"})]
  # Synthetic and records runs of a model back to back: the machine is
  # shared, and neighbours in time see the most similar load.
  cases = [(m, "none", data, 1) for m in MODELS
           for data in ("synthetic", "records")]
  cases += [(m, "none", "synthetic", 2) for m in MODELS]
  cases += [(m, "bf16", "synthetic", 1) for m in MODELS]
  runs = [measure(*case, records) for case in cases]
  matmul.append(run_worker({"kind": "matmul"}))
  best = {k: max(m[k] for m in matmul) for k in matmul[0]}
  for run in runs:  # Also against the least disturbed matmul figure.
    rate = best["bfloat16" if run["precision"] == "bf16" else "float32"]
    run["fraction_of_matmul_rate"] = round(run["achieved_gflops"] / rate, 4)
  write_results(runs, matmul, best, time.monotonic() - started)


def _input_cost(runs):
  cost = {}
  for name in MODELS:
    step = {r["data"]: r["step_seconds"] for r in runs if r["model"] == name
            and r["ranks"] == 1 and r["precision"] == "none"}
    cost[name] = dict(synthetic_step_seconds=step["synthetic"],
                      records_step_seconds=step["records"],
                      records_overhead=round(step["records"] /
                                             step["synthetic"] - 1, 4))
  return cost


def _cpu_model():
  with open("/proc/cpuinfo", encoding="utf-8") as f:
    names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
  return names[0] if names else platform.processor()


def _rounded(rates):
  return {k: round(v, 1) for k, v in rates.items()}


def write_results(runs, matmul, best, seconds):
  models = {name: dict(config=m["config"], flops_per_sequence=flops_per_sequence(
      bert.load_config(m["config"]))) for name, m in MODELS.items()}
  results = dict(
      machine=dict(cpus=os.cpu_count(), processor=_cpu_model(),
                   python=platform.python_version()),
      settings=dict(seq_length=S, masked_positions=P, vocab_size=VOCAB,
                    optimizer="lamb", untimed_first_step=True),
      matmul_gflops=dict(n=2048, used=_rounded(best),
                         before_runs=_rounded(matmul[0]),
                         after_runs=_rounded(matmul[1])),
      flops_formula=FLOPS_FORMULA, models=models, runs=runs,
      input_pipeline=_input_cost(runs), bench_seconds=round(seconds, 1))
  path = os.path.join(ROOT, "bench", "results", "train_throughput.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1, sort_keys=True)
    f.write("\n")
  print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
  main()
