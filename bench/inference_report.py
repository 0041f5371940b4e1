"""bench/inference.py's goals (computed from the measured figures), docs/inference.md and .png."""

from inference_engines import FORMAT_LABELS, FORMATS

INT8 = ("onnx_int8_dynamic", "onnx_int8_static")


def cell(results, model, fmt, seq, batch):
  """The timing row of (model, format, S, B), or None."""
  for row in results["latency"]:
    if (row["model"], row["format"], row["seq_length"], row["batch"]) == (model, fmt, seq, batch):
      return row
  return None


def _p50(results, model, fmt, ref):
  row = cell(results, model, fmt, ref["seq_length"], ref["batch"])
  return row["p50_ms"] if row and row.get("p50_ms") else None


def _metric(results, model, fmt):
  entry = results["models"][model]["formats"].get(fmt)
  return entry["metrics"].get(results["settings"]["metric"]) if entry else None


def _ratio(a, b):
  return a / b if a is not None and b else None


def _goal(goal, checks, measured):
  """checks: [(value, threshold, ">=" | "<=")]; met is None when a value is missing."""
  if any(v is None for v, _, _ in checks):
    met = None
  else:
    met = all(v >= t if op == ">=" else v <= t for v, t, op in checks)
  return {"goal": goal, "measured": measured, "met": met,
          "values": [{"value": v, "threshold": t, "op": op} for v, t, op in checks]}


def _fmt(value, spec):
  return "n/a" if value is None else format(value, spec)


def int8_goals(results, ref):
  metric, out = results["settings"]["metric"], []
  for name, model in results["models"].items():
    if model["role"] != "student":
      continue
    base_metric, base_p50 = _metric(results, name, "tf_fp32"), _p50(results, name, "tf_fp32", ref)
    for fmt in INT8:
      kept = _ratio(_metric(results, name, fmt), base_metric)
      speedup = _ratio(base_p50, _p50(results, name, fmt, ref))
      out.append(_goal(
          f"{name} {FORMAT_LABELS[fmt]}: keeps >= 99% of the fp32 {metric}, >= 2x faster "
          "than the TF fp32 SavedModel",
          [(kept, 0.99, ">="), (speedup, 2.0, ">=")],
          f"{metric} kept {_fmt(kept and 100 * kept, '.2f')}%, {_fmt(speedup, '.2f')}x "
          f"({_fmt(base_p50, '.2f')} -> {_fmt(_p50(results, name, fmt, ref), '.2f')} ms p50)"))
  return out


def pruned_goals(results, ref):
  pruned = [(n, m) for n, m in results["models"].items() if m["role"] == "pruned"]
  if not pruned:
    return [_goal("a pruned student >= 1.5x the unpruned one's speed keeps >= 98% of its "
                  "metric", [(None, 1.5, ">=")], "skipped: no --pruned_checkpoint given")]
  out = []
  for name, model in pruned:
    for fmt in model["formats"]:
      speedup = _ratio(_p50(results, model["of"], fmt, ref), _p50(results, name, fmt, ref))
      kept = _ratio(_metric(results, name, fmt), _metric(results, model["of"], fmt))
      out.append(_goal(
          f"{name} vs {model['of']}, {FORMAT_LABELS[fmt]}: >= 1.5x faster, keeps >= 98%",
          [(speedup, 1.5, ">="), (kept, 0.98, ">=")],
          f"{_fmt(speedup, '.2f')}x, {results['settings']['metric']} kept "
          f"{_fmt(kept and 100 * kept, '.2f')}%"))
  return out


def _best(results, name, ref):
  """(format, p50) of the fastest format of a model at the reference shape."""
  found = [(p, f) for f in results["models"][name]["formats"]
           for p in [_p50(results, name, f, ref)] if p]
  return (min(found)[1], min(found)[0]) if found else (None, None)


def _shape(model):
  return f"{model['config']['num_hidden_layers']}L-{model['config']['hidden_size']}D"


def student_goal(results, ref):
  """The 4L-312D student (else the smallest) against the speed reference when one was
  given (the BERT-base shape the goal names), else against the teacher."""
  models, teacher = results["models"], results["settings"]["teacher"]
  base = results["settings"].get("speed_reference") or teacher
  students = [n for n, m in models.items() if m["role"] == "student"]
  shaped = [n for n in students if (models[n]["config"]["num_hidden_layers"],
                                    models[n]["config"]["hidden_size"]) == (4, 312)]
  student = (shaped or sorted(students, key=lambda n: models[n]["parameters"]))[0]
  (b_fmt, b_p50), (s_fmt, s_p50) = _best(results, base, ref), _best(results, student, ref)
  speedup = _ratio(b_p50, s_p50)
  note = "" if shaped else " (no 4L-312D student given: the smallest one)"
  if base != teacher:
    t_fmt, t_p50 = _best(results, teacher, ref)
    note += (f"; {base} is the speed reference (its weights are not a trained model); vs "
             f"the teacher {teacher} ({_shape(models[teacher])}, "
             f"{FORMAT_LABELS.get(t_fmt, t_fmt)} {_fmt(t_p50, '.2f')} ms): "
             f"{_fmt(_ratio(t_p50, s_p50), '.2f')}x")
  return _goal(f"{student} ({_shape(models[student])}) vs {base} "
               f"({_shape(models[base])}), best format of each: >= 8x",
               [(speedup, 8.0, ">=")],
               f"{_fmt(speedup, '.2f')}x: {base} {FORMAT_LABELS.get(b_fmt, b_fmt)} "
               f"{_fmt(b_p50, '.2f')} ms vs {student} {FORMAT_LABELS.get(s_fmt, s_fmt)} "
               f"{_fmt(s_p50, '.2f')} ms{note}")


def serving_goals(results):
  serving = results["serving"]
  if not serving:
    return [_goal(g, [(None, t, op)], "skipped: --skip_serving") for g, t, op in (
        ("the server adds <= 2 ms p50 over the bare model at concurrency 1", 2.0, "<="),
        ("the server serves >= 3x the bare batch-1 throughput", 3.0, ">="),
        ("no errors in the load test", 0, "<="))]
  bare, levels = serving["bare"], {lv["concurrency"]: lv for lv in serving["levels"]}
  one, top = levels.get(1), levels[max(levels)]
  added = one["p50_ms"] - bare["p50_ms"] if one else None
  gain = _ratio(top["requests_per_s"], bare["seq_per_s"])
  batched = bare.get("batched_seq_per_s") or {}
  best = max(batched.items(), key=lambda kv: kv[1]) if batched else None
  ceiling = (f"; the bare model itself, batched, peaks at "
             f"{_fmt(_ratio(best[1], bare['seq_per_s']), '.2f')}x ({best[1]:.1f} seq/s at batch "
             f"{best[0]}): the server reaches {_fmt(_ratio(top['requests_per_s'], best[1]), '.0%')}"
             " of it") if best else ""
  errors = sum(lv["errors"] for lv in serving["levels"])
  return [
      _goal("the server adds <= 2 ms p50 over the bare model at concurrency 1",
            [(added, 2.0, "<=")], f"+{_fmt(added, '.2f')} ms ({_fmt(one and one['p50_ms'], '.2f')}"
            f" vs bare {bare['p50_ms']:.2f} ms p50)"),
      _goal(f"at concurrency {top['concurrency']} the server serves >= 3x the bare batch-1 "
            "throughput", [(gain, 3.0, ">=")],
            f"{_fmt(gain, '.2f')}x ({top['requests_per_s']:.1f} req/s vs bare "
            f"{bare['seq_per_s']:.1f} seq/s; mean batch "
            f"{_fmt(top['mean_batch_rows'], '.1f')} rows{ceiling})"),
      _goal("no errors in the load test", [(errors, 0, "<=")], f"{errors} errors")]


def goals(results):
  ref = results["settings"]["reference"]
  return (int8_goals(results, ref) + pruned_goals(results, ref) + [student_goal(results, ref)]
          + serving_goals(results))


# ---------------------------------------------------------------- markdown


def _row(cells):
  return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows):
  return "\n".join([_row(header), _row(["---"] * len(header))] + [_row(r) for r in rows]) + "\n"


def _verdict(met):
  return {True: "met", False: "not met", None: "n/a"}[met]


def latency_table(results):
  metric, rows = results["settings"]["metric"], []
  for r in results["latency"]:
    entry = results["models"][r["model"]]["formats"][r["format"]]
    speed_only = results["models"][r["model"]]["role"] == "speed_reference"
    rows.append([r["model"] + (" (speed only)" if speed_only else ""),
                 FORMAT_LABELS[r["format"]], r["seq_length"], r["batch"],
                 _fmt(r.get("p50_ms"), ".2f"), _fmt(r.get("p99_ms"), ".2f"),
                 _fmt(r.get("seq_per_s"), ".1f"), r.get("calls", r.get("skipped")),
                 f"{entry['size_mb']:.1f}", _fmt(entry["metrics"].get(metric), ".4f"),
                 _fmt(entry.get("agreement_with_tf_fp32"), ".4f")])
  return _table(["Model", "Format", "Seq", "Batch", "p50 (ms)", "p99 (ms)", "seq/s", "Calls",
                 "Size (MB)", metric.capitalize(), "Agrees with TF fp32"], rows)


def serving_table(serving):
  rows = [[lv["concurrency"], lv["requests"], lv["errors"], f"{lv['requests_per_s']:.1f}",
           f"{lv['p50_ms']:.2f}", f"{lv['p99_ms']:.2f}", _fmt(lv["mean_batch_rows"], ".1f"),
           lv["max_batch_rows"]] for lv in serving["levels"]]
  return _table(["Concurrency", "Requests", "Errors", "Requests/s", "p50 (ms)", "p99 (ms)",
                 "Mean batch (rows)", "Max batch"], rows)


def markdown(results):
  s, env, serving = results["settings"], results["environment"], results["serving"]
  ref = s["reference"]
  kind = "QUICK smoke run, not a measurement" if s["quick"] else "full run"
  lines = [
      "# Inference: latency, throughput, size and task metric per format", "",
      f"Written by `bench/inference.py` ({kind}). Command: `{env['command']}`", "",
      "## Goals", "",
      f"Reference shape: batch {ref['batch']}, sequence length {ref['seq_length']}; "
      "every figure below is computed from this run's measurements.", "",
      _table(["Goal", "Measured", "Result"],
             [[g["goal"], g["measured"], _verdict(g["met"])] for g in results["goals"]]),
      "## Models and formats", "",
      latency_table(results),
      f"Timing: fixed-shape inputs (every position a real token), {s['warmup']} warm-up "
      f"call(s), then up to {s['calls']} timed calls per cell, interleaved across all cells "
      f"(order rotated each round). ONNX Runtime: CPU, {s['ort_threads']} intra-op threads, "
      f"spinning {'on' if s['ort_spinning'] else 'off'}; TensorFlow: {s['ort_threads']} intra-op "
      "threads, "
      "the SavedModel's `encoded` signature. seq/s = batch / mean latency. "
      f"{s['metric'].capitalize()}: {results['metric_input']['split']} split of "
      f"`{results['metric_input']['dir']}` ({results['metric_input']['examples']} examples) "
      "from each engine's own logits. Size: the graph file (SavedModel: graph + variables), "
      "MB = 10^6 bytes.", ""]
  if serving:
    lines += [
        "## Serving load test (`tools/serve.py`)", "",
        f"Model `{serving['model']}` (raw text in), server flags "
        f"`{' '.join(serving['server_flags']) or '(defaults)'}`; one instance per request, "
        f"127.0.0.1, a thread pool client with one keep-alive connection per thread.", "",
        serving_table(serving),
        f"Bare model (the export's serving_default called in-process at batch 1 on the same "
        f"texts): p50 {serving['bare']['p50_ms']:.2f} ms, p99 {serving['bare']['p99_ms']:.2f} "
        f"ms, {serving['bare']['seq_per_s']:.1f} seq/s; batched back to back (no server): "
        + ", ".join(f"batch {b} {v:.1f} seq/s" for b, v in
                    serving["bare"].get("batched_seq_per_s", {}).items()) + ".", ""]
  lines += ["## Machine", "",
            f"Load average (1, 5, 15 min) before: {_loads(env['load_average_before'])}; "
            f"after timing: {_loads(env['load_average_after_timing'])}; after: "
            f"{_loads(env['load_average_after'])}; {env['cpu_count']} CPUs. "
            f"TensorFlow {env['tensorflow']}, ONNX Runtime {env['onnxruntime']}.", ""]
  lines += [f"Note: {n}" for n in results["notes"]] + ([""] if results["notes"] else [])
  return "\n".join(lines)


def _loads(values):
  return ", ".join(f"{x:.2f}" for x in values)


def write_plot(results, path):
  """Metric vs batch-1 latency at the reference length, one marker per model x format."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  ref, metric = results["settings"]["reference"], results["settings"]["metric"]
  fig = Figure(figsize=(7, 4.8), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  markers = dict(zip(FORMATS, "osD^"))
  for k, (name, model) in enumerate(results["models"].items()):
    for fmt, entry in model["formats"].items():
      p50, y = _p50(results, name, fmt, ref), entry["metrics"].get(metric)
      if p50 is None or y is None:
        continue
      ax.scatter([p50], [y], marker=markers[fmt], color=f"C{k}",
                 label=f"{name} {FORMAT_LABELS[fmt]}")
  ax.set_xscale("log")
  ax.set_xlabel(f"p50 latency, batch {ref['batch']}, seq {ref['seq_length']} (ms, log)")
  ax.set_ylabel(f"{metric} ({results['metric_input']['split']})")
  ax.set_title("Task metric vs latency per model and format")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  fig.savefig(path, format="png")
