"""The classifier-run flags shared by tools/finetune.py and tools/distill.py
(task distill records); meaning and defaults: modeling/training/classifier_runs.py.

Imported by a tool as `import _classifier_flags`; defining the flags is a side
effect of the import.
"""

from absl import flags

from modeling.training.classifier_runs import ClassifierConfig

_default = {f: ClassifierConfig.__dataclass_fields__[f].default
            for f in ("num_train_epochs", "warmup_proportion", "best_metric", "eval_split")}

flags.DEFINE_float("num_train_epochs", _default["num_train_epochs"], "Classifiers: passes "
                   "over the train split (sets --num_train_steps unless that is given).")
flags.DEFINE_float("warmup_proportion", _default["warmup_proportion"], "Classifiers: warmup "
                   "share of the steps (unless --num_warmup_steps is given).")
flags.DEFINE_string("best_metric", _default["best_metric"], "Classifiers: eval metric that "
                    "selects <output_dir>/best/: accuracy, precision, recall, f1, mcc, "
                    "roc_auc (binary), loss, kd_loss / teacher_agreement (distill).")
flags.DEFINE_string("eval_split", _default["eval_split"],
                    "Classifiers: split evaluated after every epoch ('': none).")

NAMES = tuple(_default)
