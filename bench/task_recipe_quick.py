"""A generated task where the teacher knows what the gold labels do not say.

For bench/task_recipe.py --quick and tests/test_task_recipe.py. Sentences of
filler words with one or three sentiment words; the label is the majority
sentiment (never a tie). Two task directories share vocab, dev and test:

  teacher/   train: TEACHER_ROWS rows with clean labels (the teacher learns the rule)
  student/   train: STUDENT_ROWS other rows, a FLIP_SHARE of their gold labels flipped
             (the gold labels the student sees say the rule only partly)

plus a random tiny masked LM (a Google TF1 checkpoint) for augment_task_data:
its candidates are arbitrary whole words, which is what the test needs (new
inputs whose labels only the teacher can give). Deterministic given the seed.
"""

import os
import random

FILLER = ("river valley town people music north south city bridge school market winter "
          "summer forest island century trade railway festival library museum story "
          "scene actor").split()
GOOD = ("great", "wonderful", "superb", "fine", "moving", "clever")
BAD = ("awful", "boring", "dull", "poor", "clumsy", "flat")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "!")
TEACHER_ROWS, STUDENT_ROWS, DEV_ROWS, TEST_ROWS = 2400, 160, 300, 600
FLIP_SHARE = 0.35
MAX_SEQ_LENGTH = 24


def example(rnd):
  """(sentence, label): label 1 when good words outnumber bad ones (1 or 3 of them)."""
  words = [rnd.choice(FILLER) for _ in range(rnd.randint(3, 10))]
  good = 0
  count = rnd.choice((1, 3))
  for _ in range(count):
    is_good = rnd.random() < 0.5
    good += is_good
    words.insert(rnd.randrange(len(words) + 1), rnd.choice(GOOD if is_good else BAD))
  return " ".join(words) + rnd.choice((" .", " !", "")), int(2 * good > count)


def _write(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    f.write("sentence\tlabel\n")
    f.writelines(f"{text}\t{label}\n" for text, label in rows)


def write_task(directory, seed=0, student_rows=STUDENT_ROWS, flip_share=FLIP_SHARE):
  """Writes vocab.txt, teacher/ and student/ under directory; returns their paths."""
  rnd = random.Random(seed)
  os.makedirs(directory, exist_ok=True)
  sizes = {"teacher": TEACHER_ROWS, "student": student_rows, "dev": DEV_ROWS,
           "test": TEST_ROWS}
  rows = {name: [example(rnd) for _ in range(n)] for name, n in sizes.items()}
  noisy = [(text, 1 - label if rnd.random() < flip_share else label)
           for text, label in rows["student"]]
  paths = {"vocab": os.path.join(directory, "vocab.txt")}
  with open(paths["vocab"], "w", encoding="utf-8") as f:
    f.write("\n".join(SPECIALS + tuple(sorted(set(FILLER + list(GOOD + BAD))))) + "\n")
  for name, train in (("teacher", rows["teacher"]), ("student", noisy)):
    paths[name] = os.path.join(directory, name)
    os.makedirs(paths[name], exist_ok=True)
    _write(os.path.join(paths[name], "train.tsv"), train)
    _write(os.path.join(paths[name], "dev.tsv"), rows["dev"])
    _write(os.path.join(paths[name], "test.tsv"), rows["test"])
  paths["flipped"] = sum(a[1] != b[1] for a, b in zip(rows["student"], noisy))
  return paths


def vocab_size(vocab_file):
  with open(vocab_file, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())


def write_mlm(directory, vocab_file, seed=0):
  """A random 1-layer H=32 BertPretrainer as a TF1 checkpoint; returns its prefix."""
  # pylint: disable=import-outside-toplevel
  import keras
  from modeling.checkpoints import google
  from modeling.models import heads
  from modeling.networks import bert
  prefix = os.path.join(directory, "bert_model.ckpt")
  if os.path.exists(prefix + ".index"):
    return prefix
  keras.utils.set_random_seed(seed)
  config = bert.BertConfig(vocab_size=vocab_size(vocab_file), hidden_size=32,
                           num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=64, hidden_act="gelu_new")
  model = bert.ensure_built(heads.BertPretrainer(config))
  os.makedirs(directory, exist_ok=True)
  return google.save_tf1_checkpoint(model, prefix)
