"""Which input tokens a classifier's answer rests on: gradient x input and integrated
gradients (Sundararajan et al. 2017), per token, on the token embeddings.

The explained output F is the softmax probability of a target class (by default the
predicted one) of a sequence classifier (heads.SequenceClassifier), or the score of a
regression (STS-B). Its input is the row's token embeddings x [length, token_dim]
(models/input_perturbation.py: the model adds a perturbation to them); positions and
token types stay as they are.

- gradient x input: a_i = sum_d x_id dF/dx_id at x.
- integrated gradients: a_i = sum_d (x_id - b_id) integral_0^1 dF/dx_id(b + t (x - b)) dt,
  with the baseline b the zero vector at every attributed token ([CLS], [SEP] and padding
  keep their embeddings, and get 0). The integral is a `steps`-point Gauss-Legendre rule
  on [0, 1]. Completeness: sum_i a_i = F(x) - F(b) exactly for the true integral; the
  rule's error is reported per example (`completeness_error`), and shrinks as `steps`
  grows.

Attributions are computed for a batch of rows at a time, each row's F differentiated
alone (the rows of a batch do not interact). `explain` does it for texts and dev records
with a fine-tuned train.py run's classifier and writes the page (tools/attribution.py is
its command).
"""

import dataclasses
import functools
import html
import os

import jax
import jax.numpy as jnp
import numpy as np

from data import atomic_files
from evaluation import fine_tuned_classifier
from models import input_perturbation

METHODS = ('integrated_gradients', 'gradient_x_input')
INPUTS = fine_tuned_classifier.INPUTS


@dataclasses.dataclass
class Attribution:
  """One example's attributions."""

  pieces: list[str]  # The row's real tokens, [CLS] and [SEP] included.
  scores: list[float]  # One per piece (0 on [CLS], [SEP]).
  method: str
  target: int  # The explained class (0 for a regression).
  prediction: int | float  # The model's class (or score).
  label: int | float | None  # The gold label, when known.
  output: float  # F(x).
  baseline_output: float  # F(b) (integrated gradients; NaN for gradient x input).
  completeness_error: float  # |sum of scores - (F(x) - F(b))| (NaN for gradient x input).
  text: str = ''

  def top(self, k: int = 3) -> list[tuple[str, float]]:
    """The k pieces with the largest attributions, largest first."""
    order = np.argsort(-np.asarray(self.scores), kind='stable')[:k]
    return [(self.pieces[i], float(self.scores[i])) for i in order]


def _site(model, params, inputs: tuple) -> input_perturbation.Site:
  """Where the model's token embeddings are, from the shapes of one forward pass."""
  _, sown = jax.eval_shape(
    lambda p, *x: model.apply({'params': p}, *x, deterministic=True, mutable='intermediates'),
    params,
    *inputs,
  )
  return input_perturbation.locate(sown['intermediates'], stack='encoder')


@functools.partial(jax.jit, static_argnames=('model', 'site'))
def _forward(params, inputs, *, model, site):
  """(logits [batch, classes], token embeddings [batch, length, token_dim])."""
  logits, sown = model.apply(
    {'params': params}, *inputs, deterministic=True, mutable='intermediates'
  )
  return logits, site.read(sown['intermediates'])


def explained(logits: jax.Array, target: jax.Array) -> jax.Array:
  """F per row [batch]: the target class's probability, or a regression's score."""
  if logits.shape[-1] == 1:
    return logits[:, 0].astype(jnp.float32)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(probs, target[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnames=('model', 'site'))
def _output_and_grad(params, inputs, delta, target, *, model, site):
  """(F [batch], dF/dx [batch, length, token_dim]) at the embeddings x + delta."""

  def total(d):
    variables = {'params': params, input_perturbation.COLLECTION: site.tree(d)}
    logits = model.apply(variables, *inputs, deterministic=True)
    f = explained(logits, target)
    return jnp.sum(f), f  # Rows are independent: d sum / d x_row = d F_row / d x_row.

  grad, f = jax.grad(total, has_aux=True)(delta)
  return f, grad


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """(nodes, weights) of the `steps`-point Gauss-Legendre rule on [0, 1]."""
  if steps < 1:
    raise ValueError(f'steps={steps} must be >= 1.')
  nodes, weights = np.polynomial.legendre.leggauss(steps)
  return (nodes + 1.0) / 2.0, weights / 2.0


def attribute(
  model, params, rows: dict, *, method: str = 'integrated_gradients', steps: int = 64,
  target: np.ndarray | None = None, attributed: np.ndarray | None = None,
) -> dict:  # fmt: skip
  """Per-token attributions of a batch of rows.

  Args:
    model: a sequence classifier (its outputs are logits [batch, classes], or [batch, 1]).
    params: its params.
    rows: {'tokens', 'segment_ids', 'positions', 'token_types'} int arrays [batch, length].
    method: one of METHODS.
    steps: integrated gradients' quadrature points.
    target: the class explained per row [batch] (default: the predicted class).
    attributed: bool [batch, length], the tokens that get attributions and a zero
      baseline (default: the real tokens but the first and last of each row, i.e. not
      [CLS] and the final [SEP]).

  Returns:
    {'scores' [batch, length] (0 where not attributed), 'logits', 'target', 'output' F(x),
    'baseline_output' F(b) and 'completeness_error' [batch] (NaN for gradient x input)}.
  """
  if method not in METHODS:
    raise ValueError(f'method={method!r}; expected one of {METHODS}.')
  inputs = tuple(jnp.asarray(rows[name], jnp.int32) for name in INPUTS)
  site = _site(model, params, inputs)
  logits, x = _forward(params, inputs, model=model, site=site)
  logits, x = np.asarray(logits, np.float32), np.asarray(x, np.float32)
  if target is None:
    target = np.argmax(logits, -1) if logits.shape[-1] > 1 else np.zeros(len(logits), np.int64)
  target = jnp.asarray(target, jnp.int32)
  if attributed is None:
    attributed = default_attributed(np.asarray(rows['segment_ids']))
  mask = np.asarray(attributed, np.float32)[..., None]  # [batch, length, 1]
  zero = jnp.zeros_like(x)
  out = {'logits': logits, 'target': np.asarray(target)}
  if method == 'gradient_x_input':
    f, grad = _output_and_grad(params, inputs, zero, target, model=model, site=site)
    out['scores'] = np.sum(np.asarray(grad) * x * mask, axis=-1)
    out['output'] = np.asarray(f)
    out['baseline_output'] = out['completeness_error'] = np.full(len(x), np.nan)
    return out
  moved = x * mask  # x - b: zero where the baseline is the embedding itself.
  total = np.zeros_like(x)
  for node, weight in zip(*gauss_legendre(steps), strict=True):
    delta = jnp.asarray((node - 1.0) * moved)  # b + t (x - b) = x + (t - 1)(x - b).
    _, grad = _output_and_grad(params, inputs, delta, target, model=model, site=site)
    total += weight * np.asarray(grad)
  f_x, _ = _output_and_grad(params, inputs, zero, target, model=model, site=site)
  f_b, _ = _output_and_grad(params, inputs, jnp.asarray(-moved), target, model=model, site=site)
  scores = np.sum(moved * total, axis=-1)  # [batch, length]
  out['scores'], out['output'], out['baseline_output'] = scores, np.asarray(f_x), np.asarray(f_b)
  out['completeness_error'] = np.abs(scores.sum(-1) - (out['output'] - out['baseline_output']))
  return out


def default_attributed(segment_ids: np.ndarray) -> np.ndarray:
  """bool [batch, length]: the real tokens between a row's first and last ([CLS] ... [SEP])."""
  real = segment_ids > 0
  length = real.sum(-1, keepdims=True)
  index = np.arange(real.shape[-1])[None]
  return real & (index > 0) & (index < length - 1)


def render_html(attributions: list[Attribution], title: str) -> str:
  """A page of coloured tokens: red pushes F up, blue pushes it down; the intensity is the
  score over the example's largest |score|; the exact value is each token's tooltip."""
  parts = [
    '<!doctype html><html><head><meta charset="utf-8">',
    f'<title>{html.escape(title)}</title><style>',
    'body{font-family:sans-serif;max-width:60em;margin:2em auto}',
    '.ex{margin:1.2em 0;padding:.6em;border-bottom:1px solid #ddd}',
    '.t{padding:.1em .15em;margin:0 .05em;border-radius:.2em;line-height:1.9}',
    '.meta{color:#555;font-size:.85em}</style></head><body>',
    f'<h1>{html.escape(title)}</h1>',
    '<p>Red: the token raises the explained output; blue: lowers it.</p>',
  ]
  for i, a in enumerate(attributions):
    peak = max((abs(s) for s in a.scores), default=0.0) or 1.0
    spans = []
    for piece, score in zip(a.pieces, a.scores, strict=True):
      alpha = min(abs(score) / peak, 1.0)
      rgb = '220,38,38' if score > 0 else '37,99,235'
      spans.append(
        f'<span class="t" style="background:rgba({rgb},{alpha:.3f})" '
        f'title="{score:+.4f}">{html.escape(piece)}</span>'
      )
    check = (
      f'; F(b) {a.baseline_output:.4f}, sum {sum(a.scores):+.4f}, completeness error '
      f'{a.completeness_error:.2e}'
      if np.isfinite(a.completeness_error)
      else ''
    )
    parts.append(
      f'<div class="ex"><div class="meta">#{i} {a.method}: label {a.label}, predicted '
      f'{a.prediction}, explained class {a.target}, F(x) {a.output:.4f}{check}</div>'
      f'<div>{"".join(spans)}</div></div>'
    )
  parts.append('</body></html>')
  return '\n'.join(parts)


def explain(
  run: str, texts: list[tuple], examples: int, out: str, *, method: str, steps: int = 64,
  seq_len: int = 0, batch_size: int = 16, defaults=None,
) -> list[Attribution]:  # fmt: skip
  """Attributions of `texts` [(text, text_b or None)] and of the first `examples` dev
  records of `run` (`defaults`: compressed_run.read_run's); writes attribution.html and
  attributions.json into `out`."""
  classifier = fine_tuned_classifier.load(run, defaults)
  items = [(a, b, None) for a, b in texts]
  items += [(r['text_a'], r['text_b'], r['label']) for r in classifier.dev_records(examples)]
  if not items:
    raise ValueError('Nothing to explain: pass --text, --texts_file or --examples.')
  found = []
  for start in range(0, len(items), batch_size):
    chunk = items[start : start + batch_size]
    rows = classifier.rows([(a, b) for a, b, _ in chunk], seq_len)
    result = attribute(classifier.model, classifier.params, rows, method=method, steps=steps)
    for i, (a, b, label) in enumerate(chunk):
      length = int(rows['segment_ids'][i].sum())
      logits = result['logits'][i]
      found.append(
        Attribution(
          pieces=classifier.pieces(rows['tokens'][i, :length]),
          scores=[float(s) for s in result['scores'][i, :length]],
          method=method,
          target=int(result['target'][i]),
          prediction=float(logits[0]) if len(logits) == 1 else int(np.argmax(logits)),
          label=None if label is None else float(label) if len(logits) == 1 else int(label),
          output=float(result['output'][i]),
          baseline_output=float(result['baseline_output'][i]),
          completeness_error=float(result['completeness_error'][i]),
          text=a if b is None else f'{a}\t{b}',
        )
      )
  title = f'{method} of {classifier.description}'
  atomic_files.write_text(os.path.join(out, 'attribution.html'), render_html(found, title))
  source = classifier.source
  report = {
    'run': source.workdir,
    'checkpoint': source.checkpoint,
    'step': source.step,
    'method': method,
    'steps': steps,
    'attributions': [dataclasses.asdict(a) for a in found],
  }
  atomic_files.write_json(os.path.join(out, 'attributions.json'), report)
  return found


def relative_errors(found: list[Attribution]) -> np.ndarray:
  """Each text's completeness error over |F(x) - F(b)| (floored at 1e-3)."""
  return np.array([
    a.completeness_error / max(abs(a.output - a.baseline_output), 1e-3) for a in found
  ])  # fmt: skip
