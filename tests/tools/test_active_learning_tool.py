"""`data.train_records` (a round's labelled records) and `python -m tools.active_learning`
end to end on a tiny model: rounds add exactly the strategy's picks, round 0 is shared,
the report and the curves are written, and a second invocation trains nothing again."""

import json
import os
import subprocess
import sys

import pytest

from configs import active_learning as al_config
from data import tasks
from tests.training import finetune_runs, runs


def test_train_records_select_listed_positions_in_file_order(tmp_path):
  finetune_runs.write_sst2(tmp_path, 20, 6)
  listed = tmp_path / 'labelled.txt'
  tasks.write_positions(str(listed), [7, 2, 11], 'three labels')
  assert listed.read_text().startswith('# three labels\n')
  assert tasks.read_positions(str(listed)) == [7, 2, 11]
  config = al_config.get_config('sst2')
  config.data.glue_dir = str(tmp_path)
  every = tasks.load_examples(config.data, 'train')
  config.data.train_records = str(listed)
  train = tasks.load_examples(config.data, 'train')
  assert train == [every[2], every[7], every[11]]
  assert len(tasks.load_examples(config.data, 'eval')) == 6  # The dev split stays whole.
  config.data.train_per_label = 2
  with pytest.raises(ValueError, match='set one'):
    tasks.load_examples(config.data, 'train')
  config.data.train_per_label = 0
  for text, message in (('3\n3\n', 'more than once'), ('1\nx\n', "'x' is not a record"),
                        ('-1\n', 'not a record'), ('25\n', 'past the train'),
                        ('# none\n', 'lists no record')):  # fmt: skip
    listed.write_text(text)
    with pytest.raises(ValueError, match=message):
      tasks.load_examples(config.data, 'train')


@pytest.mark.slow
def test_active_learning_rounds_end_to_end(spm_path, tmp_path):
  glue = tmp_path / 'glue'
  finetune_runs.write_sst2(glue, 40, 16)
  work = tmp_path / 'al'
  command = [
    sys.executable, '-m', 'tools.active_learning', '--config=configs/active_learning.py:sst2',
    f'--workdir={work}', '--pool=24', '--budget=12', '--rounds=2', '--seeds=0',
    '--strategies=coreset', '--mc_samples=2', '--nofull_pool',
    f'--config.data.glue_dir={glue}', f'--config.data.tokenizer_path={spm_path}',
    *finetune_runs.KEYWORD_SIZES, '--config.seq_len=32', '--config.batch_size=4',
    '--config.total_steps=4', '--config.eval_every_steps=4', '--config.checkpoint_every_steps=4',
    '--config.peak_flops_per_device=1e9',
  ]  # fmt: skip
  done = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-4000:]
  seed = work / 'seed0'
  pool = tasks.read_positions(str(seed / 'pool.txt'))
  records = tasks.load_examples(_glue_data(glue), 'train')
  assert len(pool) == 24 and sorted(records[p]['label'] for p in pool) == [0] * 12 + [1] * 12
  first = tasks.read_positions(str(seed / 'round0' / 'labelled.txt'))
  assert len(first) == 6 and set(first) <= set(pool)
  for strategy in ('coreset',):
    with open(seed / strategy / 'round1' / 'queried.json') as f:
      queried = json.load(f)
    labelled = tasks.read_positions(str(seed / strategy / 'round1' / 'labelled.txt'))
    assert len(queried['chosen']) == 6 and not set(queried['chosen']) & set(first)
    assert sorted(labelled) == sorted(first + queried['chosen'])
    assert queried['labels'] == [records[p]['label'] for p in queried['chosen']]
    with open(seed / strategy / 'round1' / 'run' / 'config.json') as f:
      assert json.load(f)['data']['train_records'].endswith(f'{strategy}/round1/labelled.txt')
  with open(work / 'active_learning.json') as f:
    report = json.load(f)
  rows = {r['strategy']: r for r in report['summary']}
  assert set(rows) == {'coreset'} and rows['coreset']['labels'] == [6, 12]
  with open(seed / 'round0' / 'run' / 'eval.json') as f:  # Round 0's run, shared.
    assert rows['coreset']['median'][0] == 100 * json.load(f)['scores']['sst2']
  for row in rows.values():
    assert all(0 <= v <= 100 for v in row['median'])
  assert (work / 'active_learning.png').stat().st_size > 1000
  assert '| coreset |' in (work / 'active_learning.md').read_text()
  # Killed after a round's training, before its evaluation: the same command evaluates that
  # round again (its run resumes at its last step: nothing to train) and reads the others.
  os.remove(seed / 'coreset' / 'round1' / 'run' / 'eval.json')
  logged = (seed / 'coreset' / 'round1' / 'run' / 'metrics.jsonl').read_text()
  stamp = os.path.getmtime(seed / 'round0' / 'run' / 'eval.json')
  again = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert again.returncode == 0, again.stderr[-4000:]
  assert os.path.getmtime(seed / 'round0' / 'run' / 'eval.json') == stamp
  assert (seed / 'coreset' / 'round1' / 'run' / 'metrics.jsonl').read_text() == logged
  with open(work / 'active_learning.json') as f:
    assert json.load(f)['per_seed'] == report['per_seed']
  assert tasks.read_positions(str(seed / 'round0' / 'labelled.txt')) == first


def _glue_data(glue):
  config = al_config.get_config('sst2')
  config.data.glue_dir = str(glue)
  return config.data
