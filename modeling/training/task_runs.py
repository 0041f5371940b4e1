"""Task runs follow their records' kind: classifiers or extractive QA span models.

tools/finetune.py (and tools/distill.py on a task label cache) describe a run
with the classifier-run settings (classifier_runs.ClassifierConfig); this
module reads what --data_dir holds and starts the matching run:

  classification records / task distill records -> classifier_runs
  QA records / QA distill records                -> qa_runs (span model), with
      run_squad's defaults (2 epochs, best by dev f1) where the user gave none,
      and the QA prediction settings (n-best size, max answer length, null
      threshold).

Flags that only apply to one of them are a one-line error on the other.
"""

import dataclasses

from modeling.training import classifier_runs
from modeling.training import qa_runs
from pipeline.core import kinds

_CLASSIFICATION = (kinds.CLASSIFICATION_RECORDS, kinds.TASK_DISTILL_RECORDS)
_QA = (kinds.QA_RECORDS, kinds.QA_DISTILL_RECORDS)
# QA-only settings (their defaults: qa_runs.QaConfig).
QA_SETTINGS = ("n_best_size", "max_answer_length", "null_score_diff_threshold")
APPLIES = {name: _QA for name in QA_SETTINGS}
_STAGES = {"finetune": "finetune_qa", "distill_task": "distill_qa"}
# Classifier settings whose QA default differs (used unless the user gave them).
_QA_DEFAULTS = ("num_train_epochs", "best_metric")


def input_kind(data_dir):
  kind, _ = kinds.read(data_dir, *_CLASSIFICATION, *_QA)
  return kind


def qa_config(config, qa_settings, given):
  """The QaConfig of a run described by a ClassifierConfig (+ the QA settings)."""
  shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(qa_runs.QaConfig)
            if hasattr(config, f.name) and (f.name not in _QA_DEFAULTS or f.name in given)}
  shared["stage"] = _STAGES.get(config.stage, config.stage)
  return qa_runs.QaConfig(**shared, **(qa_settings or {}))


def train_task(config, loop, flag_values=None, qa_settings=None, given=frozenset()):
  """Fine-tunes or distills the classifier or span model `config`'s records call for.

  Args:
    config: classifier_runs.ClassifierConfig.
    loop: run.LoopConfig.
    flag_values: the tool's flags, for train_config.json.
    qa_settings: {name in QA_SETTINGS: value}.
    given: names of the flags the user gave.
  """
  kind = input_kind(config.data_dir)
  kinds.check_flags(kind, given, APPLIES)
  if kind in _QA:
    return qa_runs.train_qa(qa_config(config, qa_settings, given), loop, flag_values)
  return classifier_runs.train_classifier(config, loop, flag_values)
