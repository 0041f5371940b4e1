"""tools/augment_task_data.py: task splits -> augmented task splits (stage contract).

Loads the masked LM (any checkpoint with an MLM head that
modeling/checkpoints/loading.py reads: Google TF1, HF safetensors, this
project's pretraining or general-distillation runs) and the word-embedding
table for neighbours (the masked LM's own, or --embedding_checkpoint's),
checks both against the task vocab, then hands the text work to
pipeline/corpus/augmented_data.py. Everything is refused before the output
directory is touched: an input without data rows, a model whose vocab_size
is not the vocab's, a run that recorded another vocab.
"""

import dataclasses
import os
import time
from typing import Optional

from modeling.augmentation import candidates
from modeling.checkpoints import loading
from modeling.checkpoints import name_map
from modeling.models import heads
from modeling.networks import bert as bert_lib
from modeling.training import pretraining
from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core import world as world_lib
from pipeline.core.errors import ConfigError, InputError
from pipeline.corpus import augmented_data
from pipeline.labels import pretraining_labels
from pipeline.labels import task_labels
from pipeline.text import augmentation
from pipeline.text.tokenization import BertTokenizer


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentConfig:
  """tools/augment_task_data.py's settings."""
  input_dir: str  # <split>.<format> files (fetch_task_data's output or any such dir).
  output_dir: str
  vocab_file: str  # The task's vocab (teacher's and student's).
  mlm_checkpoint: str  # A model with a masked-LM head.
  settings: augmented_data.AugmentSettings
  mlm_config: Optional[str] = None  # Default: the config stored beside the checkpoint.
  embedding_checkpoint: Optional[str] = None  # Default: the masked LM's embeddings.
  embedding_config: Optional[str] = None
  do_lower_case: bool = True
  max_seq_length: int = 128  # Tokens of a masked-LM input.
  batch_size: int = 256  # Masked copies per forward pass.
  overwrite: bool = False

  def __post_init__(self):
    if self.max_seq_length < 3 or self.batch_size < 1:
      raise ConfigError("--max_seq_length must be >= 3 and --batch_size >= 1")


def _bert_config(checkpoint, config_file, vocab_size, what):
  """The checkpoint's BertConfig, checked against the vocab."""
  try:
    if config_file:
      config = bert_lib.load_config(config_file, pretraining.gelu_convention_for(checkpoint))
    else:
      config = loading.stored_config(checkpoint)
  except (OSError, ValueError) as e:
    raise InputError(checkpoint, str(e)) from None
  if config.vocab_size != vocab_size:
    raise InputError(checkpoint, f"{what} has vocab_size {config.vocab_size} but the vocab "
                     f"has {vocab_size} entries: it was trained with another vocab")
  return config


def _load(model, checkpoint):
  try:
    loading.load_checkpoint(bert_lib.ensure_built(model), checkpoint)
  except (OSError, ValueError) as e:
    raise InputError(checkpoint, str(e)) from None
  return model


def _check_run_vocab(checkpoint, vocab_sha):
  """A run of this project that recorded its vocab must have used this one."""
  trained = task_labels.run_vocab_sha256(checkpoint)
  if trained and trained != vocab_sha:
    raise InputError(checkpoint, f"was trained with vocab sha256 {trained[:12]}..., not "
                     f"--vocab_file's {vocab_sha[:12]}...")


def _weights_sha256(model):
  return pretraining_labels.weights_sha256(
      (p.tf1_name, p.variable.numpy()) for p in name_map.model_params(model))


def load_models(config, vocab_size, vocab_sha):
  """(masked LM, embedding table [V,H], {name: identity}) for the manifest."""
  mlm_config = _bert_config(config.mlm_checkpoint, config.mlm_config, vocab_size,
                            "the masked LM")
  _check_run_vocab(config.mlm_checkpoint, vocab_sha)
  mlm = _load(heads.BertPretrainer(mlm_config), config.mlm_checkpoint)
  identity = {"mlm": {"bert_config": mlm_config.to_dict(), "weights_sha256": _weights_sha256(mlm)}}
  if not config.embedding_checkpoint:
    return mlm, mlm.bert.embeddings.word_embeddings.numpy(), identity
  emb_config = _bert_config(config.embedding_checkpoint, config.embedding_config,
                            vocab_size, "the embedding model")
  _check_run_vocab(config.embedding_checkpoint, vocab_sha)
  encoder = _load(bert_lib.BertModel(emb_config), config.embedding_checkpoint)
  table = encoder.embeddings.word_embeddings.numpy()  # [V,H]
  identity["embeddings"] = {"bert_config": emb_config.to_dict(),
                            "weights_sha256": pretraining_labels.weights_sha256(
                                [("word_embeddings", table)])}
  return mlm, table, identity


def _generator(config, tok, mlm, table):
  mask = augmentation.word_vocab_mask(tok)
  top_k = config.settings.top_k
  return candidates.CandidateGenerator(
      tok.vocab,
      candidates.MlmCandidates(mlm, mask, top_k, config.max_seq_length, config.batch_size,
                               (tok.cls_id, tok.sep_id, tok.mask_id)),
      candidates.EmbeddingNeighbours(table, mask, top_k))


def _stage_config(config, tok, vocab_sha, identity, variant_column):
  """The output's identity; variant_column: what create_classification_data
  tells variants by (augmented_data.Layout.variant)."""
  return dict(config.settings.config(), variant_column=variant_column,
              do_lower_case=config.do_lower_case, vocab_size=tok.vocab_size,
              vocab_sha256=vocab_sha, max_seq_length=config.max_seq_length,
              batch_size=config.batch_size, **identity)


def augment(config):
  """Writes the augmented task data of `config` (stage contract)."""
  start = time.monotonic()
  if world_lib.launched_by_mpi():
    raise ConfigError("augmentation runs in one process (task data sets are small): "
                      "start it without mpirun")
  files, input_hash = augmented_data.read_inputs(config.input_dir, config.settings)
  # Bad files fail before the output is claimed.
  layouts = [augmented_data.layout(files[s], config.settings) for s in config.settings.splits]
  if not os.path.isfile(config.vocab_file):
    raise InputError(config.vocab_file, "vocab file does not exist")
  tok = BertTokenizer(config.vocab_file, do_lower_case=config.do_lower_case)
  vocab_sha = stage.file_sha256(config.vocab_file)
  mlm, table, identity = load_models(config, tok.vocab_size, vocab_sha)
  out = stage.StageOutput(config.output_dir, kinds.AUGMENTED_TASK_DATA.stage,
                          _stage_config(config, tok, vocab_sha, identity, layouts[0].variant),
                          input_hash,
                          config.overwrite)
  if out.prepare():
    print(f"augment_task_data: {config.output_dir} is up to date (nothing to do)")
    return None
  stats = augmented_data.run_stage(out, files, config.settings, tok,
                                   _generator(config, tok, mlm, table))
  seconds = time.monotonic() - start
  print("augment_task_data: " + ", ".join(
      f"{s} {v['inputs']} inputs -> {v['variants']} variants ({v['variants_per_input']} per "
      f"input, {v['replaced_word_share']:.0%} of their words replaced, "
      f"{v['duplicates_dropped']} duplicates dropped)" for s, v in stats.items())
      + f" in {seconds:.0f}s -> {config.output_dir}")
  return stats
