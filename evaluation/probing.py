"""Per-layer probes: what each layer of a frozen checkpoint holds (Tenney et al. 2019;
Jawahar et al. 2019), with Hewitt & Liang's (2019) control tasks for selectivity.

  python eval.py --config configs/probe.py:pos,chunk,ner,sst2 --workdir W \\
      --config.init_from=CKPT --config.data.conll_dir=../shared/data/conll2003 \\
      --config.data.glue_dir=../shared/data/glue

The checkpoint's stack runs once over each task's rows, frozen (evaluation/frozen_model.py),
and every layer's states are kept: layer 0 is the embeddings' output, layer i the output
of block i. A token task (CoNLL-2003's 'pos', 'chunk' or 'ner' column) reads each word's
state at its first sub-token; the sentence task ('sst2') the mean of the row's real
tokens. On each layer's states two probes are trained, from the same seed:

  linear   softmax regression;
  mlp      one hidden ReLU layer of `probe.mlp_dim` (the control of Hewitt & Liang: a
           stronger probe that can memorize more).

Both also learn the control task of a token task: each word type gets a label drawn once
from the task's label distribution (so the control has the task's label frequencies and
its word-type consistency, and nothing of its linguistics); selectivity is task accuracy
minus control accuracy. Probes train with AdamW (`probe.steps` steps of `probe.
train_batch` items drawn with replacement, `probe.learning_rate`, `probe.weight_decay`) on
standardized states (each layer's train mean and standard deviation), all layers at once
(a vmap), and are scored on the eval split.
Accuracy is per word (token tasks) or per sentence.

Writes `<workdir>/eval.json` ({'probe': {task: {'linear', 'mlp', 'control_linear',
'control_mlp', 'selectivity_linear', 'selectivity_mlp', 'majority'}}}: lists by layer),
`<workdir>/probes.md` (the table) and `<workdir>/probes.png` (accuracy by layer per task).
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data import atomic_files, conll, glue
from evaluation import frozen_model
from models import intermediates
from objectives import tagging
from training import config_checks

TOKEN_TASKS = tuple(conll.TAG_COLUMNS)  # 'pos', 'chunk', 'ner': CoNLL-2003's columns.
SENTENCE_TASKS = ('sst2',)
TASKS = (*TOKEN_TASKS, *SENTENCE_TASKS)
KINDS = ('linear', 'mlp')


@dataclasses.dataclass
class ProbeData:
  """One split of a task, as states per layer."""

  features: np.ndarray  # [layers + 1, items, embed]: embeddings first.
  labels: np.ndarray  # [items] int
  words: list[str] | None  # A token task's word of each item (the control's types).


def parse_tasks(text: str) -> tuple[str, ...]:
  tasks = tuple(t.strip() for t in text.split(',') if t.strip())
  unknown = sorted(set(tasks) - set(TASKS))
  if not tasks or unknown:
    raise ValueError(f'probe.tasks={text!r}: expected a comma-separated subset of {TASKS}.')
  return tasks


def sample(items: list, count: int, seed: int) -> list:
  """`count` items drawn without replacement (in file order), or all when count <= 0."""
  if count <= 0 or count >= len(items):
    return list(items)
  keep = np.sort(np.random.default_rng(seed).choice(len(items), count, replace=False))
  return [items[i] for i in keep]


def layer_states(model, rows: dict, batch_size: int, pick) -> np.ndarray:
  """Per layer (embeddings first), what `pick` keeps of the stack's states: [layers + 1,
  items, embed]. `pick(states [rows, length, embed], batch)` runs on each batch, so only
  the kept items stay in memory (not every layer's [rows, length, embed])."""
  out = None
  for start in range(0, len(rows['tokens']), batch_size):
    batch = {k: v[start : start + batch_size] for k, v in rows.items()}
    _, kept = frozen_model.forward(model, batch, keep=('intermediates',))
    sown = intermediates.stack(kept['intermediates'], model.stack)
    states = [sown.embedded] + [layer.output for layer in sown.layers]
    if out is None:
      out = [[] for _ in states]
    for parts, state in zip(out, states, strict=True):
      parts.append(pick(np.asarray(state), batch))
  return np.stack([np.concatenate(parts) for parts in out])


def token_task_data(model, sentences, labels: list[str], seq_len: int, batch_size: int):
  """States at every kept word's first sub-token (words cut off by `seq_len` are left out)."""
  label_to_id = {tag: i for i, tag in enumerate(labels)}
  encoded = [
    tagging.encode_sentence(words, tags, model.tokenizer, label_to_id, seq_len)
    for words, tags in sentences
  ]
  rows = {k: np.stack([e[k] for e in encoded]) for k in (*frozen_model.INPUTS, 'label_weights')}
  first = rows['label_weights'] > 0  # [rows, length]
  word_numbers = np.stack([e['word_numbers'] for e in encoded])
  row_of, position_of = np.nonzero(first)  # Row-major: sentence by sentence, word order.
  words = [
    sentences[r][0][word_numbers[r, p] - 1] for r, p in zip(row_of, position_of, strict=True)
  ]
  y = np.stack([e['labels'] for e in encoded])[first]
  features = layer_states(model, rows, batch_size, lambda s, b: s[b['label_weights'] > 0])
  return ProbeData(features, y.astype(np.int32), words)


def sentence_task_data(model, records: list[dict], seq_len: int, batch_size: int):
  """Mean states over each row's real tokens."""
  rows = frozen_model.encode_texts(model, [(r['text_a'], r['text_b']) for r in records], seq_len)

  def mean_of_real(states, batch):  # [rows, length, embed] -> [rows, embed]
    real = (batch['segment_ids'] > 0).astype(np.float32)[..., None]
    return np.sum(states * real, axis=1) / np.sum(real, axis=1)

  labels = np.array([r['label'] for r in records], np.int32)
  return ProbeData(layer_states(model, rows, batch_size, mean_of_real), labels, None)


def control_labels(train_words, eval_words, train_labels, num_classes: int, seed: int):
  """Hewitt & Liang's control task: each word type (as written) gets one label, drawn from
  the train split's label distribution; returns the train and eval items' labels."""
  distribution = np.bincount(train_labels, minlength=num_classes) / len(train_labels)
  types = sorted(set(train_words) | set(eval_words))
  drawn = np.random.default_rng(seed).choice(num_classes, size=len(types), p=distribution)
  label_of = dict(zip(types, drawn.tolist(), strict=True))
  return (
    np.array([label_of[w] for w in train_words], np.int32),
    np.array([label_of[w] for w in eval_words], np.int32),
  )


def _init(kind: str, dim: int, num_classes: int, mlp_dim: int, rng) -> dict:
  if kind == 'linear':
    return {'w': jnp.zeros((dim, num_classes)), 'b': jnp.zeros(num_classes)}
  first, second = jax.random.split(rng)
  return {
    'w1': jax.random.normal(first, (dim, mlp_dim)) * dim**-0.5,
    'b1': jnp.zeros(mlp_dim),
    'w': jax.random.normal(second, (mlp_dim, num_classes)) * mlp_dim**-0.5,
    'b': jnp.zeros(num_classes),
  }


def _logits(params: dict, x):
  if 'w1' in params:
    x = jax.nn.relu(x @ params['w1'] + params['b1'])
  return x @ params['w'] + params['b']


def train_probes(x, y, num_classes: int, *, kind: str, steps: int, learning_rate: float,
                 weight_decay: float, mlp_dim: int, seed: int, batch: int = 0):  # fmt: skip
  """One probe per layer on x [layers, items, embed] (standardized) and labels y [items]:
  AdamW for `steps` steps from the same initialization, each step on `batch` items drawn
  with replacement (the same items for every layer; 0: every item, full batch); returns
  the params (stacked over layers)."""
  return _train(
    jnp.asarray(x), jnp.asarray(y), num_classes=num_classes, kind=kind, steps=steps,
    learning_rate=learning_rate, weight_decay=weight_decay, mlp_dim=mlp_dim, seed=seed,
    batch=batch,
  )  # fmt: skip


@functools.partial(
  jax.jit,
  static_argnames=('num_classes', 'kind', 'steps', 'learning_rate', 'weight_decay', 'mlp_dim',
                   'seed', 'batch'),
)  # fmt: skip
def _train(x, y, *, num_classes, kind, steps, learning_rate, weight_decay, mlp_dim, seed, batch):
  """`train_probes`' program: the labels are an argument, so a task and its control
  (same shapes, same settings) share one compilation."""
  tx = optax.adamw(learning_rate, weight_decay=weight_decay)
  items = y.shape[0]

  def train_one(features):
    params = _init(kind, features.shape[-1], num_classes, mlp_dim, jax.random.key(seed))

    def loss(p, rows):
      logits = _logits(p, features[rows])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y[rows]).mean()

    def step(carry, key):
      p, opt = carry
      rows = jnp.arange(items) if not batch else jax.random.randint(key, (batch,), 0, items)
      grads = jax.grad(loss)(p, rows)
      updates, opt = tx.update(grads, opt, p)
      return (optax.apply_updates(p, updates), opt), None

    keys = jax.random.split(jax.random.key(seed + 1), steps)
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), keys)
    return params

  return jax.vmap(train_one)(x)


def accuracies(params, x, y) -> np.ndarray:
  """[layers] accuracy of each layer's probe on x [layers, items, embed]."""
  return np.asarray(_accuracies(params, jnp.asarray(x), jnp.asarray(y)))


@jax.jit
def _accuracies(params, x, y):
  predictions = jax.vmap(lambda p, f: jnp.argmax(_logits(p, f), axis=-1))(params, x)
  return jnp.mean(predictions == y[None], axis=-1)  # [layers]


def standardize(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Both splits scaled by each layer's train mean and standard deviation per feature."""
  mean = train.mean(axis=1, keepdims=True)
  std = train.std(axis=1, keepdims=True) + 1e-6
  return (train - mean) / std, (other - mean) / std


def probe_task(train: ProbeData, evaluation: ProbeData, num_classes: int, probe_cfg) -> dict:
  """{figure: [per layer]} of one task: each probe kind's accuracy, on the control task
  and the selectivity (token tasks), and the majority-class baseline."""
  x_train, x_eval = standardize(train.features, evaluation.features)
  settings = dict(
    steps=probe_cfg.steps, learning_rate=probe_cfg.learning_rate,
    weight_decay=probe_cfg.weight_decay, mlp_dim=probe_cfg.mlp_dim, seed=probe_cfg.seed,
    batch=probe_cfg.train_batch,
  )  # fmt: skip
  layers = x_train.shape[0]
  majority = np.bincount(train.labels, minlength=num_classes).argmax()
  result = {'majority': [float(np.mean(evaluation.labels == majority))] * layers}
  control = None
  if train.words is not None and probe_cfg.control:
    control = control_labels(
      train.words, evaluation.words, train.labels, num_classes, probe_cfg.seed
    )
  for kind in KINDS:
    params = train_probes(x_train, train.labels, num_classes, kind=kind, **settings)
    result[kind] = accuracies(params, x_eval, evaluation.labels).tolist()
    if control is not None:
      params = train_probes(x_train, control[0], num_classes, kind=kind, **settings)
      result[f'control_{kind}'] = accuracies(params, x_eval, control[1]).tolist()
      result[f'selectivity_{kind}'] = [
        a - c for a, c in zip(result[kind], result[f'control_{kind}'], strict=True)
      ]
  return result


def load_task(model, task: str, config) -> tuple[ProbeData, ProbeData, int]:
  """(train, eval, number of classes) of one task, sampled as `config.probe` asks."""
  p = config.probe
  if task in TOKEN_TASKS:
    read = {
      split: conll.read_conll(os.path.join(config.data.conll_dir, f'{name}.txt'), task)
      for split, name in (('train', 'train'), ('eval', 'valid'))
    }
    labels = conll.label_list(read['train'] + read['eval'])
    splits = [
      token_task_data(
        model, sample(read[split], count, p.seed), labels, config.seq_len, p.batch_size
      )
      for split, count in (('train', p.train_examples), ('eval', p.eval_examples))
    ]
    return splits[0], splits[1], len(labels)
  records = {
    split: sample(glue.read_glue(config.data.glue_dir, task, name), count, p.seed)
    for split, name, count in (
      ('train', 'train', p.train_examples),
      ('eval', 'dev', p.eval_examples),
    )
  }
  splits = [
    sentence_task_data(model, records[s], config.seq_len, p.batch_size) for s in ('train', 'eval')
  ]
  return splits[0], splits[1], len(glue.get_task(task).labels)


def table(results: dict) -> str:
  """Markdown: per task and layer, both probes, the control and selectivity."""
  lines = [
    '| task | layer | linear | mlp | control (linear) | selectivity (linear) | '
    'control (mlp) | selectivity (mlp) | majority |',
    '|' + '---|' * 9,
  ]
  names = ('linear', 'mlp', 'control_linear', 'selectivity_linear', 'control_mlp',
           'selectivity_mlp', 'majority')  # fmt: skip
  for task, r in results.items():
    for layer in range(len(r['linear'])):
      cells = [f'{100 * r[n][layer]:.1f}' if n in r else '-' for n in names]
      lines.append(f'| {task} | {layer} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot(results: dict, path: str, title: str):
  """PNG: accuracy by layer, one line per task (linear solid, MLP dashed, control dotted)."""
  import matplotlib  # Deferred: only the picture needs it (eval.py imports this module).

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for i, (task, r) in enumerate(results.items()):
    color = f'C{i}'
    layers = range(len(r['linear']))
    ax.plot(layers, r['linear'], '-o', color=color, label=f'{task} linear', markersize=4)
    ax.plot(layers, r['mlp'], '--', color=color, label=f'{task} mlp')
    if 'control_linear' in r:
      ax.plot(layers, r['control_linear'], ':', color=color, label=f'{task} control')
  ax.set_xlabel('layer (0: embeddings)')
  ax.set_ylabel('dev accuracy')
  ax.set_title(title, fontsize=8)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def run(config, workdir: str) -> dict:
  """Probes every layer of `config.init_from` on `config.probe.tasks`; writes eval.json,
  probes.md and probes.png into `workdir` and returns the results."""
  if not config.init_from:
    raise ValueError('Probing needs --config.init_from: the checkpoint to look into.')
  config_checks.validate(config)
  tasks = parse_tasks(config.probe.tasks)
  model = frozen_model.load(config.init_from)
  results = {}
  for task in tasks:
    train, evaluation, num_classes = load_task(model, task, config)
    results[task] = probe_task(train, evaluation, num_classes, config.probe)
    results[task]['items'] = {'train': len(train.labels), 'eval': len(evaluation.labels)}
    print(
      f'{task}: linear accuracy by layer', ' '.join(f'{a:.3f}' for a in results[task]['linear'])
    )
  os.makedirs(workdir, exist_ok=True)
  report = {'task': 'probe', 'checkpoint': model.source, 'probe': results,
            'settings': config.probe.to_dict()}  # fmt: skip
  text = table(results)
  print(text)
  atomic_files.write_text(
    os.path.join(workdir, 'probes.md'), f'Probes of {model.source}\n\n{text}\n'
  )
  plot(results, os.path.join(workdir, 'probes.png'), model.source[-90:])
  atomic_files.write_json(os.path.join(workdir, 'eval.json'), report)
  return results
