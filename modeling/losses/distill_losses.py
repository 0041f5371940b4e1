"""Knowledge-distillation losses: pure functions of float32 tensors.

Shape legend: B=batch, P=masked positions per sequence, K=cached teacher ids
per position, V=vocab size, S=sequence length, H=hidden size (H_s student,
H_t teacher), N=attention heads, L=layers.

Notation: q_T = softmax(student logits / T) over the V ids, p_T the
teacher's distribution at the same T. Per-position terms are [B,P]; the
caller averages them over the real masked positions with
`weighted_mean(term, masked_lm_weights)`, so padding positions (weight 0)
count for nothing.

Cached targets (pipeline/labels/packed_labels.py) hold K (id, value) pairs per
position. With "topk" labels the values are p_T of the K most probable ids
and `tail` = 1 - their sum; how the loss treats the missing tail is the
`kd_mode` (KD_TAILS):

  renormalize  KL(p~ || q~) over the K ids, both renormalized to sum 1:
               p~_k = v_k / sum_j v_j, log q~_k = log q_k - logsumexp_j log q_j
               (ids with v = 0 left out on both sides).
  bucket       KL over K+1 categories, the K ids plus one bucket holding the
               rest: teacher (v_1..v_K, tail), student (q_1..q_K, 1 - sum_k
               q_k). The student's bucket is logsumexp of log q_T over the
               ids outside the K (exact in log space, no 1 - sum cancellation),
               floored at LOG_BUCKET_FLOOR. By the data-processing inequality
               this KL is a lower bound of the full KL(p_T || q_T).
  ignore       cross-entropy -sum_k v_k log q_k with the K probabilities as
               they are (sum < 1, no tail): the seed pipeline's loss, kept
               for comparison.

With "sampled" labels (kd_mode SAMPLED) the values are weights w_k = count_k
/ K of ids drawn i.i.d. from p_T, so sum_k w_k f(id_k) is an unbiased
estimate of E_{p_T}[f] (see pipeline/labels/packed_labels.py). With f = -log q_T:

  sampled      -sum_k w_k log q_T(id_k), unbiased for the cross-entropy
               H(p_T, q_T) = KL(p_T || q_T) + H(p_T); H(p_T) does not depend
               on the student, so the gradient is that of the KL.

renormalize and bucket return a KL (>= 0, 0 at a perfect match); ignore and
sampled return a cross-entropy (their teacher entropy is unknown).
"""

import math

import tensorflow as tf
from pipeline.core.errors import ConfigError

KD_TAILS = ("renormalize", "bucket", "ignore")
SAMPLED = "sampled"
KD_MODES = KD_TAILS + (SAMPLED,)
# The student's tail bucket probability is floored at 1e-12: only reached
# when the K ids cover (nearly) the whole vocab, where it keeps a float16
# rounding leftover in the teacher's tail from weighing log(0).
LOG_BUCKET_FLOOR = math.log(1e-12)
# Fills ids excluded from a logsumexp: finite, so gradients stay finite.
_EXCLUDED = -1e9
# Keeps the weighted mean finite for a batch without any masked position.
_EPSILON = 1e-5


def weight_problems(alpha, temperature):
  """What is wrong with a KD loss's alpha and T (empty: nothing).

  alpha weighs the hard-label loss (1 - alpha: KD) in every distillation
  loss of the project; T divides both sides' logits.
  """
  problems = []
  if not 0.0 <= alpha <= 1.0:
    problems.append(f"alpha must be in [0, 1], got {alpha}")
  if not temperature > 0:
    problems.append(f"temperature must be > 0, got {temperature}")
  return problems


def weighted_mean(values, weights):
  """sum(w * x) / sum(w) over all entries (as modeling/losses/pretraining_losses.py does)."""
  weights = tf.cast(weights, tf.float32)
  return tf.reduce_sum(weights * values) / (tf.reduce_sum(weights) + _EPSILON)


def log_probs(logits, temperature):
  """log softmax(logits / T) in float32, over the last axis."""
  return tf.nn.log_softmax(tf.cast(logits, tf.float32) / temperature)


def _gather_ids(log_q, ids):
  """log_q [B,P,V], ids [B,P,K] -> log_q at the ids [B,P,K]."""
  return tf.gather(log_q, ids, batch_dims=2)


def _entropy_term(p):
  """sum_k p log p over the last axis, 0 log 0 = 0: [...,K] -> [...]."""
  return tf.reduce_sum(tf.math.xlogy(p, p), -1)


def renormalized_kl(log_q, ids, values):
  """KL over the K ids, teacher and student renormalized: [B,P].

  The one definition of the top-K KL: the "renormalize" KD term and the
  held-out teacher_kl_topk metric. Slots with value 0 are left out of the
  student's normalizer too: sampled labels pad their rows with (id 0, value
  0), and a top-k probability that underflows float16 carries no target.
  """
  kept = values > 0  # [B,P,K]
  log_q_k = tf.where(kept, _gather_ids(log_q, ids), _EXCLUDED)  # [B,P,K]
  log_q_k -= tf.reduce_logsumexp(log_q_k, -1, keepdims=True)
  # A padding position has all values 0: divide_no_nan keeps it at 0.
  p = tf.math.divide_no_nan(values, tf.reduce_sum(values, -1, keepdims=True))
  return _entropy_term(p) - tf.reduce_sum(p * log_q_k, -1)


def _log_mass_outside(log_q, ids):
  """log(sum of q over the ids not in `ids`) [B,P], floored.

  A [B*P,V] membership mask is scattered from the K ids (duplicates are
  harmless), the same size as the logits themselves.
  """
  v, k = tf.shape(log_q)[-1], tf.shape(ids)[-1]
  flat = tf.reshape(log_q, [-1, v])  # [R,V], R = B*P
  rows = tf.repeat(tf.range(tf.shape(flat)[0]), k)  # [R*K]
  indices = tf.stack([rows, tf.reshape(ids, [-1])], -1)  # [R*K,2]
  member = tf.scatter_nd(indices, tf.ones_like(rows, tf.float32),
                         tf.shape(flat)) > 0  # [R,V]
  rest = tf.reduce_logsumexp(tf.where(member, _EXCLUDED, flat), -1)  # [R]
  return tf.reshape(tf.maximum(rest, LOG_BUCKET_FLOOR), tf.shape(ids)[:-1])


def bucket_kl(log_q, ids, values, tail):
  """KL over the K ids + one tail bucket: [B,P] (see the module doc)."""
  log_q_k = _gather_ids(log_q, ids)  # [B,P,K]
  log_rest = _log_mass_outside(log_q, ids)  # [B,P]
  kept = _entropy_term(values) - tf.reduce_sum(values * log_q_k, -1)
  rest = tf.math.xlogy(tail, tail) - tail * log_rest
  return kept + rest


def weighted_cross_entropy(log_q, ids, values):
  """-sum_k v_k log q(id_k): "ignore" (top-k) and "sampled" labels: [B,P]."""
  return -tf.reduce_sum(values * _gather_ids(log_q, ids), -1)


def cached_kd(log_q, targets, kd_mode):
  """The per-position KD term of cached teacher targets.

  Args:
    log_q: the student's log q_T, float32 [B,P,V] (see log_probs).
    targets: {"teacher_ids" int32 [B,P,K], "teacher_values" [B,P,K],
      "teacher_tail_mass" [B,P]}, as pipeline/inputs/distill_dataset.py yields.
    kd_mode: one of KD_MODES.
  Returns:
    float32 [B,P].
  """
  ids, values = targets["teacher_ids"], targets["teacher_values"]
  if kd_mode == "renormalize":
    return renormalized_kl(log_q, ids, values)
  if kd_mode == "bucket":
    return bucket_kl(log_q, ids, values, targets["teacher_tail_mass"])
  if kd_mode in ("ignore", SAMPLED):
    return weighted_cross_entropy(log_q, ids, values)
  raise ConfigError(f"kd_mode must be one of {KD_MODES}, got {kd_mode!r}")


def cached_top1(targets):
  """The teacher's most probable cached id per position, int32 [B,P].

  Top-k rows are sorted by probability (index 0); for sampled rows this is
  the most often drawn id (ties: the lowest id).
  """
  best = tf.argmax(targets["teacher_values"], -1, output_type=tf.int32)
  return tf.gather(targets["teacher_ids"], best, batch_dims=2)


def full_kl(teacher_logits, student_logits, temperature):
  """KL(p_T || q_T) over the whole vocab (the online teacher): [...].

  Args:
    teacher_logits, student_logits: float [..., V].
  """
  log_p = log_probs(teacher_logits, temperature)
  log_q = log_probs(student_logits, temperature)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), -1)


def next_sentence_kl(teacher_nsp_logits, student_nsp_logits):
  """Mean over the batch of KL(teacher || student) NSP, at T=1: scalar.

  The cache stores the teacher's NSP logits at temperature 1 (two classes
  need no softening), so this term has no temperature.
  """
  return tf.reduce_mean(full_kl(teacher_nsp_logits, student_nsp_logits, 1.0))


_TINY = 1.1754944e-38  # The smallest normal float32 (np.finfo(np.float32).tiny).


def hidden_mse(student_hidden, teacher_hidden, input_mask):
  """Mean squared error over the real tokens and the H_t features: scalar.

  Args:
    student_hidden: [B,S,H_t] (already projected to the teacher's width).
    teacher_hidden: [B,S,H_t]. input_mask: int [B,S], 1 = real token.
  """
  diff = tf.cast(student_hidden, tf.float32) - tf.cast(teacher_hidden,
                                                       tf.float32)
  per_token = tf.reduce_mean(tf.square(diff), -1)  # [B,S]
  return weighted_mean(per_token, input_mask)


def attention_kl(student_probs, teacher_probs, input_mask):
  """KL(teacher || student) of attention distributions: scalar.

  Each (head, query) row is a distribution over the S keys; the KL is summed
  over keys and averaged over heads and the real query tokens (padding
  keys have probability 0 in both and add 0). With different head counts
  both sides are first averaged over their heads (the mean attention
  distribution of the layer), since heads have no correspondence.

  Args:
    student_probs: float32 [B,N_s,S,S]; teacher_probs: [B,N_t,S,S].
    input_mask: int [B,S].
  """
  s = tf.cast(student_probs, tf.float32)
  t = tf.cast(teacher_probs, tf.float32)
  if s.shape[1] != t.shape[1]:
    s = tf.reduce_mean(s, 1, keepdims=True)  # [B,1,S,S]
    t = tf.reduce_mean(t, 1, keepdims=True)
  # A peaked student head's softmax underflows to exactly 0 on keys the teacher
  # still attends to (seen with 3 of MiniLM's own layers as the student): log(0)
  # would make the loss inf and every gradient NaN. The student's log is floored
  # at the smallest normal float32 (log = -87.3), so such a key costs at most
  # 87 * t; the teacher's zeros (padding keys) add exactly 0, gradient included.
  log_s = tf.math.log(tf.maximum(s, _TINY))
  kl = tf.reduce_sum(tf.math.xlogy(t, t) - tf.math.multiply_no_nan(log_s, t), -1)  # [B,N,S]
  return weighted_mean(tf.reduce_mean(kl, 1), input_mask)


def uniform_layer_map(num_teacher_layers, num_student_layers):
  """Teacher layer (1-based) for student layers 1..L_s: round(i L_t / L_s).

  TinyBERT's "uniform" strategy: the student's last layer learns from the
  teacher's last, the others from evenly spaced layers.
  """
  _check_fewer_layers(num_teacher_layers, num_student_layers)
  ratio = num_teacher_layers / num_student_layers
  return tuple(int(round(i * ratio)) for i in range(1, num_student_layers + 1))


# Named layer maps; anything else is an explicit comma-separated list ("2,4").
LAYER_MAPS = ("uniform", "last_k")


def _check_fewer_layers(num_teacher_layers, num_student_layers):
  if num_student_layers > num_teacher_layers:
    raise ConfigError(f"student has {num_student_layers} layers, more than "
                      f"the teacher's {num_teacher_layers}")


def _explicit_layers(spec):
  """"2,4" -> (2, 4); ConfigError unless a list of positive ints."""
  try:
    layers = tuple(int(part) for part in spec.split(","))
  except ValueError:
    layers = ()
  if not layers or min(layers) < 1:
    raise ConfigError(f"layer map {spec!r}: one of {LAYER_MAPS} or teacher layers "
                      "(1-based) per student layer, e.g. 2,4")
  return layers


def check_layer_map(spec):
  """Raises ConfigError for a layer map that no pair of models can take."""
  if spec not in LAYER_MAPS:
    _explicit_layers(spec)


def layer_map(spec, num_teacher_layers, num_student_layers):
  """Teacher layer (1-based) for each student layer 1..L_s.

  uniform: uniform_layer_map; last_k: the teacher's last L_s layers
  (L_t - L_s + i), as DistilBERT-style "top layers"; else an explicit list
  of L_s teacher layers. Embeddings always map to embeddings (see
  intermediate_losses).
  """
  if spec == "uniform":
    return uniform_layer_map(num_teacher_layers, num_student_layers)
  if spec == "last_k":
    _check_fewer_layers(num_teacher_layers, num_student_layers)
    first = num_teacher_layers - num_student_layers
    return tuple(range(first + 1, num_teacher_layers + 1))
  layers = _explicit_layers(spec)
  if len(layers) != num_student_layers or max(layers) > num_teacher_layers:
    raise ConfigError(f"layer map {spec!r}: needs {num_student_layers} teacher layers "
                      f"(one per student layer) in 1..{num_teacher_layers}")
  return layers


def intermediate_losses(student, teacher, input_mask, layers, project=None):
  """Hidden-state MSE and attention KL between mapped layers (TinyBERT).

  The one implementation of the intermediate-layer terms, for general
  (pretraining) and task distillation alike. Hidden state 0 (embeddings)
  learns from the teacher's 0 and student layer i from teacher layer
  layers[i-1]; each term is the mean over its mapped pairs.

  Args:
    student, teacher: BertModel output dicts. A term is computed when the
      student's dict has its tensors: "hidden_states" (L+1 tensors [B,S,H])
      for hidden_mse, "attention_probs" (L tensors [B,N,S,S]) for
      attention_kl; the teacher's must then have them too.
    input_mask: int [B,S], 1 = real token.
    layers: teacher layer (1-based) per student layer (layer_map).
    project: the learned projections, L_s+1 tensors [B,S,H_s] -> [B,S,H_t]
      (modeling/models/student.py's HiddenProjections); None: equal widths.
  Returns:
    {"hidden_mse": [], "attention_kl": []}, the terms computed.
  """
  terms = {}
  if "hidden_states" in student:
    states = student["hidden_states"]
    states = states if project is None else project(states)
    hidden_map = (0,) + tuple(layers)  # Indices into hidden_states (L+1).
    terms["hidden_mse"] = tf.add_n([
        hidden_mse(s, teacher["hidden_states"][t], input_mask)
        for s, t in zip(states, hidden_map)]) / len(hidden_map)
  if "attention_probs" in student:
    terms["attention_kl"] = tf.add_n([
        attention_kl(s, teacher["attention_probs"][t - 1], input_mask)
        for s, t in zip(student["attention_probs"], layers)]) / len(layers)
  return terms
