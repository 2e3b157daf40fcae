"""bench/finetune_vs_torch.py end to end at a tiny size: a 2-layer BERT written by
transformers and converted here, ours and PyTorch's token-classification steps timed
interleaved on the same batches, the ratio, the host pipeline's time and the step's
products timed alone (--gemm_floor) reported."""

import json
import os
import string

import numpy as np
import pytest

os.environ.setdefault('USE_TF', '0')  # Keep transformers from importing TensorFlow.
torch = pytest.importorskip('torch', reason='needs requirements-parity.txt')
transformers = pytest.importorskip('transformers', reason='needs requirements-parity.txt')

from bench import finetune_vs_torch  # noqa: E402
from models.convert import hf  # noqa: E402
from tests.objectives.test_tagging import write_conll  # noqa: E402


def _tiny_bert(path: str) -> None:
  """A 2 x 32 BERT with a WordPiece vocabulary of letters and the fixture's words."""
  words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *string.ascii_lowercase]
  words += [f'##{c}' for c in string.ascii_lowercase] + list(string.punctuation + string.digits)
  words += [f'word{i}' for i in range(400 - len(words))]
  os.makedirs(path)
  with open(os.path.join(path, 'vocab.txt'), 'w') as f:
    f.write('\n'.join(words) + '\n')
  config = transformers.BertConfig(
    vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, max_position_embeddings=64,
  )  # fmt: skip
  torch.manual_seed(0)
  transformers.BertModel(config).save_pretrained(path)


@pytest.mark.slow
def test_both_steps_timed_on_the_same_batches_with_the_pipeline_apart(tmp_path):
  _tiny_bert(str(tmp_path / 'hf'))
  hf.import_hf(str(tmp_path / 'hf'), str(tmp_path / 'ours'))
  write_conll(tmp_path / 'conll', 60, 8)
  out = str(tmp_path / 'bench')
  results = finetune_vs_torch.main([
    '--init_from', str(tmp_path / 'ours'), '--hf_dir', str(tmp_path / 'hf'),
    '--heads', 'token', '--dropouts', '0.1', '--prng_impls', 'threefry2x32,rbg',
    '--batch_size', '8', '--seq_len', '32', '--repeats', '2', '--warmup', '1',
    '--conll_dir', str(tmp_path / 'conll'), '--workdir', str(tmp_path / 'work'), '--out', out,
    '--gemm_floor',
  ])  # fmt: skip
  figures = results['token']['0.1']
  assert set(figures) == {'ours threefry2x32', 'ours rbg', 'torch'}
  for name, f in figures.items():
    assert f['step_ms']['min'] <= f['step_ms']['median'] <= f['step_ms']['max'], name
    assert f['step_ms']['min'] > 0
  ours = figures['ours threefry2x32']
  assert ours['compile_s'] > 0 and ours['torch_over_ours']['median'] > 0
  assert figures['torch']['torch_over_ours']['median'] == 1.0  # torch against itself.
  assert results['token']['pipeline_ms'] > 0
  # The step's products: per layer q, k, v, out, q.k, p.v and the MLP's two; the tagger's
  # one; each of them forward, and its two gradients backward.
  floor = results['token']['gemm_floor']['totals']
  assert floor['products'] == 3 * (2 * 8 + 1)
  assert floor['xla_ms'] > 0 and floor['torch_ms'] > 0
  with open(out + '.md') as f:
    table = f.read()
  assert '| token | 0.1 | ours rbg |' in table and 'host input pipeline' in table
  assert 'its 51 products' in table and '| 0.1 | torch |' in table
  with open(out + '.json') as f:
    assert json.load(f)['settings']['heads'] == 'token'
  # The synthetic rows: ids past the vocabulary's first tenth, every token tagged.
  rows = finetune_vs_torch.synthetic_rows('token', np.random.default_rng(0), 2, 8, 400, 9)
  assert rows['tokens'].min() >= 40 and rows['label_weights'].all()
