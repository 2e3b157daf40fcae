"""Where a checkpoint's attention heads look: a sentence's heads as a PNG grid and an HTML
page, and per-head statistics over many sentences (Clark et al. 2019).

  python -m tools.attention --checkpoint /tmp/minilm \\
      --text 'The quick brown fox jumps over the lazy dog.' --out /tmp/attention
  python -m tools.attention --checkpoint RUN --texts_file sentences.txt --out DIR

--checkpoint is a converted checkpoint (`python -m models.convert`) or a train.py run (a
fine-tuning run's best checkpoint, else its newest). The picture is of the first text
(`--text`, with `--text_b` as the second sentence of a pair; else the first line of
--texts_file); the statistics are over every text (`--texts_file`: one per line, a tab
between the two sentences of a pair). Writes in --out:

  attention.png   layers x heads, each head's [query, key] distribution as a heat map;
  attention.html  the same maps per layer (hover a cell: query -> key and its weight),
                  above the statistics table;
  heads.json      {statistic: [layers][heads]}: mean attention to [CLS], to [SEP], to
                  the previous, the next token and itself, and the mean entropy (nats),
                  over every real token of every text (evaluation/attention_heads.py);

and prints the heads that attend most to each. The distributions are those the model
applies (the stack's 'attention_weights', models/transformer.py), before dropout.
"""

import html
import os

import matplotlib

matplotlib.use('Agg')  # Files only, no display.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from data import atomic_files, tasks  # noqa: E402
from evaluation import attention_heads, frozen_model  # noqa: E402
from models import intermediates  # noqa: E402

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Converted checkpoint or train.py run.')
_TEXT = flags.DEFINE_string('text', None, 'The text to picture.')
_TEXT_B = flags.DEFINE_string('text_b', None, 'Second sentence of a pair (with --text).')
_TEXTS_FILE = flags.DEFINE_string('texts_file', None, 'Texts for the statistics, one a line.')
_OUT = flags.DEFINE_string('out', None, 'Directory for attention.png, .html and heads.json.')
_SEQ_LEN = flags.DEFINE_integer('seq_len', 64, 'Tokens per text (longer texts are cut).')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Texts per forward pass.')


def pieces(model: frozen_model.FrozenModel, tokens: np.ndarray, length: int) -> list[str]:
  return [model.tokenizer.id_to_piece(int(t)) for t in tokens[:length]]


def draw_grid(weights: list[np.ndarray], labels: list[str], path: str, title: str):
  """PNG: one heat map per layer (rows) and head (columns), axis labels on the edges."""
  layers, heads = len(weights), max(w.shape[0] for w in weights)
  n = len(labels)
  size = 1.1 + 0.02 * n
  fig, axes = plt.subplots(
    layers, heads, figsize=(size * heads + 1, size * layers + 1), squeeze=False
  )
  for layer, probs in enumerate(weights):
    for head in range(heads):
      ax = axes[layer, head]
      ax.set_xticks([])
      ax.set_yticks([])
      if head < probs.shape[0]:
        ax.imshow(probs[head, :n, :n], cmap='Blues', vmin=0.0, vmax=1.0, interpolation='nearest')
      else:
        ax.axis('off')  # A pruned head.
      if layer == 0:
        ax.set_title(f'head {head}', fontsize=8)
      if head == 0:
        ax.set_ylabel(f'layer {layer}', fontsize=8)
  if n <= 24:  # Token labels where they stay legible: the first column and the last row.
    for layer in range(layers):
      axes[layer, 0].set_yticks(range(n), labels, fontsize=4)
    for head in range(heads):
      axes[-1, head].set_xticks(range(n), labels, fontsize=4, rotation=90)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _cell(weight: float, query: str, key: str) -> str:
  tip = html.escape(f'{query} -> {key}: {weight:.3f}', quote=True)
  return f'<td style="background:rgba(31,119,180,{weight:.3f})" title="{tip}"></td>'


def write_html(weights, labels, stats, path: str, title: str):
  """The maps as HTML tables (a cell's shade is its weight), then the statistics."""
  out = [
    '<!doctype html><meta charset="utf-8">',
    f'<title>{html.escape(title)}</title>',
    '<style>body{font-family:sans-serif;font-size:12px} table.m{border-collapse:collapse;'
    'display:inline-table;margin:4px} table.m td{width:7px;height:7px;padding:0;'
    'border:0} table.s td,table.s th{padding:2px 6px;text-align:right}</style>',
    f'<h2>{html.escape(title)}</h2>',
    f'<p>Tokens: {html.escape(" ".join(labels))}</p>',
  ]
  n = len(labels)
  for layer, probs in enumerate(weights):
    out.append(f'<h3>Layer {layer}</h3><div>')
    for head in range(probs.shape[0]):
      rows = ''.join(
        '<tr>' + ''.join(_cell(float(probs[head, q, k]), labels[q], labels[k]) for k in range(n))
        + '</tr>'
        for q in range(n)
      )  # fmt: skip
      out.append(f'<table class="m" title="layer {layer} head {head}">{rows}</table>')
    out.append('</div>')
  names = attention_heads.STATISTICS
  out.append('<h3>Per-head statistics (mean over every real token)</h3><table class="s">')
  out.append('<tr><th>layer</th><th>head</th>' + ''.join(f'<th>{n}</th>' for n in names) + '</tr>')
  layers, heads = stats['entropy'].shape
  for layer in range(layers):
    for head in range(heads):
      cells = ''.join(f'<td>{stats[name][layer, head]:.3f}</td>' for name in names)
      out.append(f'<tr><td>{layer}</td><td>{head}</td>{cells}</tr>')
  out.append('</table>')
  atomic_files.write_text(path, '\n'.join(out) + '\n')


def inspect(checkpoint: str, texts: list[tuple], out: str, seq_len: int = 64, batch_size: int = 32):
  """Writes attention.png, attention.html and heads.json for `texts` into `out`; returns
  the statistics {name: [layers, heads]}."""
  if not texts:
    raise ValueError('No text: pass --text or --texts_file.')
  model = frozen_model.load(checkpoint)
  cls_id = model.tokenizer.bos_id if model.cfg.causal else model.tokenizer.cls_id
  statistics = attention_heads.HeadStatistics(cls_id=cls_id, sep_id=model.tokenizer.sep_id)
  picture = None
  for start in range(0, len(texts), batch_size):
    batch = frozen_model.encode_texts(model, texts[start : start + batch_size], seq_len)
    _, kept = frozen_model.forward(model, batch)
    weights = [
      np.asarray(w) for w in intermediates.attention_weights(kept['attention_weights'], model.stack)
    ]
    statistics.add(weights, batch['tokens'], batch['segment_ids'])
    if picture is None:
      length = int((batch['segment_ids'][0] > 0).sum())
      picture = (
        [w[0, :, :length, :length] for w in weights],
        pieces(model, batch['tokens'][0], length),
      )
  stats = statistics.means()
  os.makedirs(out, exist_ok=True)
  title = f'{model.source}: {" ".join(t for t in texts[0] if t)}'[:200]
  draw_grid(*picture, os.path.join(out, 'attention.png'), title)
  write_html(*picture, stats, os.path.join(out, 'attention.html'), title)
  report = {
    'checkpoint': model.source,
    'texts': len(texts),
    'seq_len': seq_len,
    'statistics': {name: values.tolist() for name, values in stats.items()},
  }
  atomic_files.write_json(os.path.join(out, 'heads.json'), report)
  return stats


def main(argv):
  del argv
  if not _CHECKPOINT.value or not _OUT.value:
    raise app.UsageError('Pass --checkpoint and --out (and --text or --texts_file).')
  texts = tasks.read_texts(_TEXT.value, _TEXT_B.value, _TEXTS_FILE.value)
  stats = inspect(_CHECKPOINT.value, texts, _OUT.value, _SEQ_LEN.value, _BATCH.value)
  print(f'{len(texts)} text(s); heads that attend most to each (layer, head from 0):')
  for line in attention_heads.describe_heads(stats):
    print(line)
  print(f'Wrote {_OUT.value}/attention.png, attention.html, heads.json')


if __name__ == '__main__':
  app.run(main)
