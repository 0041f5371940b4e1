"""TinyBERT-style data augmentation of a task's training split (teacher-labelled later).

  python tools/augment_task_data.py --input_dir=out/task/rt --output_dir=out/task/rt_aug \
      --vocab_file=VOCAB --mlm_checkpoint=out/student --text_a_column=sentence \
      --label_column=label --num_variants=20

Writes the input's splits with `train` augmented: every row followed by up to
--num_variants variants in which each word was replaced, with probability
--replace_prob, by one of --top_k candidates (masked-LM predictions for
single-piece words, nearest word-embedding neighbours for the others); a
`variant_of` column marks variants, which have no label. Then:
create_classification_data (same columns) -> extract_teacher_labels (labels
every variant once) -> distill. See docs/augmentation.md and
pipeline/corpus/augmented_data.py.
"""

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from modeling.augmentation import augment_run
from pipeline.core import cli
from pipeline.corpus import augmented_data
from pipeline.records import classification_data as cd

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Directory with <split>.<format> files.", required=True)
flags.DEFINE_string("output_dir", None, "Where the augmented splits go.", required=True)
flags.DEFINE_string("vocab_file", None, "The task's WordPiece vocab.txt.", required=True)
flags.DEFINE_bool("do_lower_case", True, "Lower-case (uncased vocab).")
flags.DEFINE_string("mlm_checkpoint", None, "A model with a masked-LM head (TF1, safetensors "
                    "or one of this project's pretraining / distillation runs).", required=True)
flags.DEFINE_string("mlm_config", None, "Its bert_config.json (default: the one beside it).")
flags.DEFINE_string("embedding_checkpoint", None, "Word embeddings for neighbours of "
                    "multi-piece words (default: the masked LM's own).")
flags.DEFINE_string("embedding_config", None, "Its bert_config.json (default: beside it).")
flags.DEFINE_enum("format", "tsv", cd.FORMATS, "tsv (GLUE) or csv.")
flags.DEFINE_bool("has_header", True, "The first line of each file names the columns.")
flags.DEFINE_string("text_a_column", None, "Column of the (first) text: name or 0-based index.",
                    required=True)
flags.DEFINE_string("text_b_column", None, "Second text of pair tasks (one side changes per "
                    "variant).")
flags.DEFINE_string("label_column", None, "Column of the label (empty in variants).",
                    required=True)
flags.DEFINE_list("splits", ["train"], "Splits to augment; the others are copied.")
flags.DEFINE_integer("num_variants", 20, "Draws per input (TinyBERT's N); duplicates dropped.")
flags.DEFINE_float("replace_prob", 0.4, "Probability of replacing each word (TinyBERT's p).")
flags.DEFINE_integer("top_k", 15, "Candidates per word (TinyBERT's K).")
flags.DEFINE_integer("seed", 0, "Seed: a row's draws depend on (seed, split, row) only.")
flags.DEFINE_integer("rows_per_shard", 256, "Input rows per published part (resume unit).")
flags.DEFINE_integer("max_seq_length", 128, "Tokens of a masked-LM input.")
flags.DEFINE_integer("batch_size", 256, "Masked copies per masked-LM forward pass.")
flags.DEFINE_bool("overwrite", False, "Replace an output made with other flags.")

_SETTINGS = ("text_a_column", "label_column", "text_b_column", "format", "has_header",
             "num_variants", "replace_prob", "top_k", "seed", "rows_per_shard")
_NAMES = ("input_dir", "output_dir", "vocab_file", "mlm_checkpoint", "mlm_config",
          "embedding_checkpoint", "embedding_config", "do_lower_case", "max_seq_length",
          "batch_size", "overwrite")


def main(argv):
  del argv
  settings = augmented_data.AugmentSettings(
      splits=tuple(FLAGS.splits), **{name: FLAGS[name].value for name in _SETTINGS})
  augment_run.augment(augment_run.AugmentConfig(
      settings=settings, **{name: FLAGS[name].value for name in _NAMES}))


if __name__ == "__main__":
  cli.run(main)
