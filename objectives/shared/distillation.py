"""The losses of knowledge distillation, as (sum, weight) pairs over the tokens or rows
that count (objectives/distill.py combines them by method).

Each function takes the student's and the teacher's arrays of one batch and a weight
per row or token (1 real, 0 padding), and returns `(sum, weight)`: the loss summed over
what counts, and how much counted, so that means stay exact across microbatches and
hosts (objectives/shared/metrics.py). Everything is computed in float32.

- `soft_kl`: Hinton et al. 2015's soft targets, KL(teacher || student) at temperature T,
  times T^2 (so its gradients keep their size as T changes). KL rather than the soft
  cross-entropy DistilBERT writes: the two differ by the teacher's entropy, a constant,
  so the gradients are the same and a student that matches its teacher scores 0.
- `soft_mse`: the same for a regression output (one score per row, STS-B).
- `hidden_cosine`: DistilBERT's cosine loss, 1 - cos(student state, teacher state).
- `normalized_mse`: BERT-PKD's patient loss on [CLS] states, ||s/|s| - t/|t|||^2.
- `mse`: TinyBERT's embedding and hidden-state loss, mean squared error per element.
- `attention_scores` / `score_mse`: TinyBERT's attention loss on the unnormalized scores.
- `relation_kl`: MiniLM's self-attention distribution and value relation transfer,
  KL(teacher || student) of softmax(X X'^T / sqrt(d)) over relation heads.
"""

import jax
import jax.numpy as jnp

Pair = tuple[jax.Array, jax.Array]


def _f32(*xs):
  return tuple(jnp.asarray(x, jnp.float32) for x in xs)


def soft_kl(student_logits, teacher_logits, weights, temperature: float) -> Pair:
  """T^2 KL(softmax(t / T) || softmax(s / T)) summed over what `weights` marks.

  Args:
    student_logits, teacher_logits: [..., classes] (rows, or gathered positions).
    weights: [...] the weight of each row or position.
    temperature: T > 0.
  """
  s, t, w = _f32(student_logits, teacher_logits, weights)
  log_p_s = jax.nn.log_softmax(s / temperature, axis=-1)
  log_p_t = jax.nn.log_softmax(t / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)  # [...]
  return temperature**2 * jnp.sum(kl * w), jnp.sum(w)


def soft_mse(student_scores, teacher_scores, weights) -> Pair:
  """Squared difference of regression outputs [rows] (or [rows, 1])."""
  s, t, w = _f32(student_scores, teacher_scores, weights)
  diff = jnp.reshape(s - t, w.shape + (-1,))
  return jnp.sum(jnp.sum(jnp.square(diff), -1) * w), jnp.sum(w)


def hidden_cosine(student_states, teacher_states, weights) -> Pair:
  """1 - cos(student, teacher) of [batch, length, width] states, per weighted token."""
  s, t, w = _f32(student_states, teacher_states, weights)
  cos = jnp.sum(s * t, -1) / jnp.maximum(
    jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1), 1e-12
  )
  return jnp.sum((1.0 - cos) * w), jnp.sum(w)


def normalized_mse(student_states, teacher_states, weights) -> Pair:
  """||s / |s| - t / |t| ||^2 of [rows, width] states (BERT-PKD, eq. 3), per weighted row."""
  s, t, w = _f32(student_states, teacher_states, weights)
  unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
  return jnp.sum(jnp.sum(jnp.square(unit(s) - unit(t)), -1) * w), jnp.sum(w)


def mse(student, teacher, weights) -> Pair:
  """Mean squared error per element of [batch, length, width] arrays over weighted tokens:
  (sum over tokens and elements, weight = tokens x width)."""
  s, t, w = _f32(student, teacher, weights)
  width = s.shape[-1]
  return jnp.sum(jnp.sum(jnp.square(s - t), -1) * w), jnp.sum(w) * width


def pair_mask(segment_ids) -> jax.Array:
  """[batch, q, k] True where query and key are real tokens of the same segment."""
  seg = segment_ids
  return (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0)


def attention_scores(queries, keys) -> jax.Array:
  """Unnormalized scores q.k / sqrt(head_dim): [batch, q, heads, d] x [batch, k, heads, d]
  -> [batch, heads, q, k] (float32)."""
  q, k = _f32(queries, keys)
  return jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(q.shape[-1])


def score_mse(student_scores, teacher_scores, segment_ids) -> Pair:
  """TinyBERT's attention loss: MSE of [batch, heads, q, k] scores over the (query, key)
  pairs attention may use (same segment, both real): sum, and pairs x heads."""
  if student_scores.shape[1] != teacher_scores.shape[1]:
    raise ValueError(
      f'TinyBERT attention transfer compares heads one to one: the student has '
      f'{student_scores.shape[1]} heads, the teacher {teacher_scores.shape[1]}.'
    )
  mask = pair_mask(segment_ids)[:, None].astype(jnp.float32)  # [batch, 1, q, k]
  sq = jnp.square(student_scores - teacher_scores) * mask
  return jnp.sum(sq), jnp.sum(mask) * student_scores.shape[1]


def _log_relation(a, b, segment_ids, heads: int) -> jax.Array:
  """log softmax(a_r b_r^T / sqrt(d_r)) over the keys, per relation head r: [batch, length,
  h, d] arrays, their h x d width split into `heads` heads -> [batch, heads, q, k]. Keys
  outside the query's segment are left out; a padding query sees only itself (a finite
  row that weighs nothing)."""
  batch, length = a.shape[:2]
  width = a.shape[2] * a.shape[3]
  if width % heads:
    raise ValueError(f'{heads} relation heads do not split a width of {width}.')
  split = lambda x: jnp.asarray(x, jnp.float32).reshape(batch, length, heads, -1)  # noqa: E731
  scores = jnp.einsum('bqhd,bkhd->bhqk', split(a), split(b)) / jnp.sqrt(width // heads)
  allowed = pair_mask(segment_ids)[:, None] | jnp.eye(length, dtype=bool)[None, None]
  return jax.nn.log_softmax(jnp.where(allowed, scores, -1e9), axis=-1)


def relation_kl(student: tuple, teacher: tuple, segment_ids, heads: int) -> Pair:
  """MiniLM (Wang et al. 2020, eqs. 3-5): KL(teacher || student) of the relations
  softmax(a b^T / sqrt(d_r)) of a pair of [batch, length, h, d] arrays: (queries, keys)
  for the self-attention distributions, (values, values) for the value relation.
  The widths are split into `heads` relation heads (MiniLM v1: the attention heads,
  which student and teacher must share; any count dividing both widths works), so the
  student's width and head size are free.

  Returns:
    (sum over relation heads and real queries of the KL, real queries x heads).
  """
  log_s = _log_relation(*student, segment_ids, heads)  # [batch, heads, q, k]
  log_t = _log_relation(*teacher, segment_ids, heads)
  kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1)  # [batch, heads, q]
  real = (segment_ids > 0).astype(jnp.float32)[:, None, :]
  return jnp.sum(kl * real), jnp.sum(real) * heads
