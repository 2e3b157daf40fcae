"""`python -m tools.difficulty` on the shared keyword-sentiment SST-2 run: one loss per train
record, equal to the cross-entropy of the run's own outputs, in the file that
`curriculum.difficulty` reads."""

import subprocess
import sys

import jax
import numpy as np

from configs import base
from data import curriculum, tasks
from evaluation import fine_tuned_classifier
from tests.training import runs


def test_scores_are_the_reference_runs_losses(keyword_sst2_run, tmp_path):
  _, run = keyword_sst2_run
  out = tmp_path / 'difficulty.txt'
  command = [sys.executable, '-m', 'tools.difficulty', f'--run={run}', f'--out={out}',
             '--batch_size=48']  # fmt: skip
  done = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-4000:]
  classifier = fine_tuned_classifier.load(run, base.get_config())
  records = tasks.load_examples(classifier.source.config.data, 'train')
  scores = curriculum.read_scores(str(out), len(records))  # 320: one per record.
  picked = [0, 1, 17, 250, 319]
  rows = classifier.rows([(records[i]['text_a'], None) for i in picked])
  logits = classifier.model.apply(
    {'params': classifier.params}, *(rows[k] for k in fine_tuned_classifier.INPUTS)
  )
  log_p = np.asarray(jax.nn.log_softmax(logits))
  by_hand = [-log_p[j, records[i]['label']] for j, i in enumerate(picked)]
  np.testing.assert_allclose(scores[picked], by_hand, rtol=1e-3, atol=1e-5)
  # The run is better than chance on most of its train records: the median loss under log 2.
  assert np.median(scores) < np.log(2) and scores.min() >= 0
