"""`python -m tools.attribution` on the shared keyword-sentiment SST-2 run (tests/conftest.py): the
command's page and JSON, integrated gradients that are complete, and the planted
sentiment word as the most attributed piece of the sentences the run gets right."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data.tokenizers import load_tokenizer
from evaluation import attribution
from tests.training import finetune_runs, runs
from training import model_setup


def _keyword_pieces(tokenizer) -> set[str]:
  """The pieces of every planted sentiment word."""
  words = finetune_runs.SENTIMENT_WORDS
  return {tokenizer.id_to_piece(int(i)) for word in words for i in tokenizer.encode(word)}


def test_the_planted_word_is_attributed_most(keyword_sst2_run, tmp_path):
  _, run = keyword_sst2_run
  out = str(tmp_path / 'attribution')
  command = [sys.executable, '-m', 'tools.attribution', f'--run={run}', f'--out={out}',
             '--examples=24', '--text=a superb film', '--batch_size=16']  # fmt: skip
  done = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-4000:]
  assert 'completeness error / |F(x) - F(b)|: median' in done.stdout, done.stdout
  with open(os.path.join(out, 'attributions.json')) as f:
    report = json.load(f)
  found = report['attributions']
  assert len(found) == 25 and report['method'] == 'integrated_gradients'
  assert found[0]['text'] == 'a superb film' and found[0]['label'] is None
  for item in found:
    assert item['pieces'][0] == '[CLS]' or item['scores'][0] == 0.0
    assert len(item['pieces']) == len(item['scores'])
    gap = item['output'] - item['baseline_output']
    assert item['completeness_error'] <= 0.05 * max(abs(gap), 0.05), item

  tokenizer = load_tokenizer(model_setup.run_model(run)[1])
  keyword = _keyword_pieces(tokenizer)
  right = [item for item in found[1:] if item['prediction'] == item['label']]
  assert len(right) >= 18, [(i['prediction'], i['label']) for i in found[1:]]
  top = [item['pieces'][int(np.argmax(item['scores']))] for item in right]
  assert np.mean([piece in keyword for piece in top]) >= 0.9, top
  with open(os.path.join(out, 'attribution.html'), encoding='utf-8') as f:
    page = f.read()
  assert page.count('class="ex"') == 25 and 'completeness error' in page


def test_nothing_to_explain_is_an_error(keyword_sst2_run, tmp_path):
  _, run = keyword_sst2_run
  with pytest.raises(ValueError, match='Nothing to explain'):
    attribution.explain(run, [], 0, str(tmp_path), method='gradient_x_input')
