"""Per-example test predictions of classifier checkpoints (a child of task_recipe.py).

  .venv/bin/python bench/task_recipe_predict.py RECORDS VOCAB SPLIT OUT_DIR name=ckpt ...

tools/evaluate.py writes the metrics of a classifier but not its per-example
predictions, which the paired significance tests need; this runs the same
library calls (modeling/evaluation/task_evaluation.py: predict, task_metrics)
and writes OUT_DIR/<name>.json = {"metrics", "predicted", "label_ids",
"correct"} for each model whose file is missing (one TensorFlow start for all).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from pipeline.core import startup  # noqa: E402  pylint: disable=wrong-import-position
startup.quiet_tensorflow()  # no CUDA start-up noise on a CPU-only machine

from modeling.evaluation import task_evaluation as te  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import stage  # noqa: E402  pylint: disable=wrong-import-position


def main(argv):
  records, vocab, split, out_dir, *models = argv
  inp = te.read_task_eval_input(records, split, vocab)
  os.makedirs(out_dir, exist_ok=True)
  for spec in models:
    name, checkpoint = spec.split("=", 1)
    out = os.path.join(out_dir, f"{name}.json")
    if os.path.exists(out):
      continue
    predicted = te.predict(te.load_classifier(checkpoint, inp), inp, 64)
    metrics, _, counts = te.task_metrics(predicted, inp.spec.labels)
    top1 = predicted["logits"].argmax(-1)
    stage.atomic_write_text(out, stage.json_dumps({
        "checkpoint": checkpoint, "split": split, "metrics": metrics, "counts": counts,
        "predicted": top1.tolist(), "label_ids": predicted["label_ids"].tolist(),
        "correct": (top1 == predicted["label_ids"]).astype(int).tolist()}))
    print(f"[predict] {name}: {split} accuracy {metrics['accuracy']:.4f}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
