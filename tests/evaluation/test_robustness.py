"""The word-substitution attack (evaluation/robustness.py, tools/attack.py): nearest
neighbours by cosine among whole words only; the greedy search against a model written
here (it keeps the swap that lowers the gold probability most, stops at the flip, and
never exceeds its budget); the figures; and the command on the shared keyword SST-2 run,
whose clean accuracy is eval.py's on the same examples."""

import json
import os
import subprocess
import sys

import numpy as np

from configs import loading
from evaluation import checkpoint_eval, robustness
from tests.training import finetune_runs, runs


class _Pieces:
  """A SentencePiece-like tokenizer: ids 0-3 special, then words and a continuation."""

  PIECES = ['<pad>', '<unk>', '[CLS]', '[SEP]', '▁good', '▁bad', '▁fine', '▁the', 'ing', '▁a1',
            '▁x']  # fmt: skip
  vocab_size = len(PIECES)
  special_ids = np.array([0, 1, 2, 3])

  def id_to_piece(self, i):
    return self.PIECES[i]


def test_swappable_words_and_their_neighbours():
  allowed = robustness.swappable(_Pieces())
  # Specials, a continuation, a word with a digit and a one-letter word are never swapped.
  np.testing.assert_array_equal(np.flatnonzero(allowed), [4, 5, 6, 7])
  table = np.zeros((11, 2))
  table[4], table[5], table[6], table[7], table[8] = [1, 0], [0, 1], [1, 0.1], [1, -0.5], [1, 0]
  near = robustness.neighbours(table, np.array([4, 5]), allowed, k=2)
  assert near == {4: [6, 7], 5: [6, 4]}  # 8 is as near as can be to 4, but a continuation.
  starts = np.array([True] * 8 + [False] + [True] * 2)
  tokens = np.array([2, 4, 7, 8, 5, 3, 0])  # [CLS] good the+ing bad [SEP] <pad>
  assert robustness.positions(tokens, 6, allowed, starts) == [1, 4]  # 'the' has a continuation.


def _row(tokens):
  n = len(tokens)
  return {'tokens': np.array(tokens), 'segment_ids': np.ones(n, np.int32),
          'positions': np.arange(n), 'token_types': np.zeros(n, np.int32)}  # fmt: skip


def _model(rows):
  """P(label 1) rises with each 'good' (4) and falls with each 'bad' (5) and 'fine' (6)."""
  t = rows['tokens']
  logit = 2.0 * (t == 4).sum(-1) - 1.5 * (t == 5).sum(-1) - 0.5 * (t == 6).sum(-1) + 0.5
  p = 1 / (1 + np.exp(-logit))
  return np.stack([1 - p, p], -1)


def test_greedy_search_keeps_the_strongest_swap_and_stops_at_the_flip():
  allowed = robustness.swappable(_Pieces())
  starts = np.ones(11, bool)
  near = {4: [6, 5], 7: [6, 4], 5: [4, 6], 6: [5, 4]}
  kwargs = dict(allowed=allowed, starts=starts, near=near, max_fraction=1.0)
  # [CLS] good good the [SEP]: label 1 (logit 4.5). Best first swap: a 'good' -> 'bad'
  # (logit 1.0), then the other 'good' -> 'bad' (logit -2.5): flipped after 2 swaps.
  row = _row([2, 4, 4, 7, 3])
  got = robustness.attack_row(_model, row, 1, **kwargs)
  assert got.success and got.clean_prediction == 1 and got.prediction == 0
  assert [(o, n) for _, o, n in got.swaps] == [(4, 5), (4, 5)] and got.words == 3
  assert got.tokens == [2, 5, 5, 7, 3]
  # A budget of one word (a third of three, at least one): no flip.
  capped = robustness.attack_row(_model, row, 1, **dict(kwargs, max_fraction=0.34))
  assert not capped.success and len(capped.swaps) == 1 and capped.prediction == 1
  # A wrong answer is not attacked.
  wrong = robustness.attack_row(_model, row, 0, **kwargs)
  assert not wrong.attacked and not wrong.swaps

  figures = robustness.summarize([got, capped, wrong])
  assert figures == {
    'examples': 3, 'clean_accuracy': 2 / 3, 'attacked_accuracy': 1 / 3, 'success_rate': 0.5,
    'mean_words_changed': 2.0, 'mean_fraction_changed': 2 / 3,
  }  # fmt: skip


def test_the_command_attacks_a_run_whose_clean_accuracy_is_eval_py_s(keyword_sst2_run, tmp_path):
  _, run = keyword_sst2_run
  out = str(tmp_path / 'attack')
  command = [sys.executable, '-m', 'tools.attack', f'--runs={run}', f'--out={out}',
             '--examples=64', '--neighbours=4']  # fmt: skip
  done = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-4000:]
  with open(os.path.join(out, 'attack.json')) as f:
    report = json.load(f)
  (measured,) = report['runs']
  figures = measured['figures']
  config = loading.load('configs/glue.py:sst2', list(finetune_runs.KEYWORD_SHAPE)
                        + list(finetune_runs.KEYWORD_SIZES))  # fmt: skip
  scores = checkpoint_eval.evaluate_checkpoint(config, run)  # All 64 dev examples.
  assert figures['examples'] == 64
  np.testing.assert_allclose(figures['clean_accuracy'], scores['scores']['sst2'], atol=1e-9)
  assert figures['attacked_accuracy'] <= figures['clean_accuracy']
  for example in measured['examples']:
    assert len(example['swaps']) <= max(1, int(0.2 * len(example['text'].split())))
  with open(os.path.join(out, 'attack.md')) as f:
    assert f.read().startswith('| run | examples | clean acc |')
