"""Curriculum learning as a loader stage (data/curriculum.py): the competence schedules by
hand, draws confined to exactly the admitted easiest fraction (and covering it), exact
resumption, the shards, and the config's length and file scorers through a fine-tuning
experiment."""

import itertools
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from configs import glue as glue_config
from data import curriculum, tasks
from data.loader import Loader, ShardSpec
from tests.training import finetune_runs
from training import experiment

N = 40


def _curriculum(schedule='sqrt', steps=10, difficulty=None, **kwargs):
  difficulty = np.arange(N, 0, -1.0) if difficulty is None else difficulty  # Doc 39 easiest.
  return curriculum.Curriculum(difficulty, schedule, steps, **kwargs)


def test_competence_schedules_by_hand():
  c0, T = 0.1, 10
  sq = _curriculum('sqrt', T, initial=c0)
  lin = _curriculum('linear', T, initial=c0)
  baby = _curriculum('baby_steps', T, stages=4)
  for t in (0, 1, 2.5, 5, 9, 10, 30):
    assert sq.competence(t) == pytest.approx(min(1, math.sqrt(t * (1 - c0**2) / T + c0**2)))
    assert lin.competence(t) == pytest.approx(min(1, t * (1 - c0) / T + c0))
  # Baby steps: 4 buckets, one more every 2.5 steps.
  assert [baby.competence(t) for t in (0, 2, 2.5, 4.9, 5, 7.5, 9.9, 10)] == [
    0.25, 0.25, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0,
  ]  # fmt: skip
  assert sq.competence(0) == pytest.approx(0.1) and sq.competence(T) == 1.0
  assert sq.competence(T / 4) > lin.competence(T / 4)  # sqrt admits faster early on.


def test_draws_are_confined_to_and_cover_the_admitted_easiest():
  cur = _curriculum('baby_steps', steps=8, stages=4)  # 10, 20, 30, then 40 documents.
  order = cur.shard_order(0, 1)
  assert order.tolist() == list(range(N - 1, -1, -1))  # Easiest (lowest score) first.
  per_step = 50
  for step, admitted in ((0, 10), (2, 20), (5, 30), (8, 40), (100, 40)):
    draws = [curriculum.draw(cur, order, step * per_step + k, seed=0, shard=0,
                             draws_per_step=per_step) for k in range(per_step)]  # fmt: skip
    assert cur.admitted(step, N) == admitted
    assert set(draws) <= set(order[:admitted].tolist())
  # 2000 draws at step 0 hit each of the 10 admitted documents 200 +- 60 times.
  many = [curriculum.draw(cur, order, k, seed=0, shard=0, draws_per_step=10**6)
          for k in range(2000)]  # fmt: skip
  counts = np.bincount(many, minlength=N)
  assert set(np.nonzero(counts)[0].tolist()) == set(order[:10].tolist())
  assert counts[order[:10]].min() > 140 and counts[order[:10]].max() < 260


def test_sqrt_admits_the_ceiling_of_the_competence():
  cur = _curriculum('sqrt', steps=100, initial=0.01)
  for t in (0, 1, 7, 50, 99):
    assert cur.admitted(t, N) == max(1, math.ceil(cur.competence(t) * N - 1e-9))
  assert cur.admitted(0, N) == 1  # c0 = 0.01 of 40 documents: one.


def test_equal_scores_keep_corpus_order_and_shards_sort_their_own():
  cur = _curriculum(difficulty=np.array([3.0, 1.0, 1.0, 2.0, 0.0, 1.0]))
  assert cur.shard_order(0, 1).tolist() == [4, 1, 2, 5, 3, 0]
  # Shard 1 of 2 holds documents 1, 3, 5 (scores 1, 2, 1): positions 0, 2, then 1.
  assert cur.shard_order(1, 2).tolist() == [0, 2, 1]


def test_bad_curricula_are_named():
  with pytest.raises(ValueError, match="'cubic' is not one of"):
    _curriculum('cubic')
  with pytest.raises(ValueError, match='at least 1 step'):
    _curriculum(steps=0)
  with pytest.raises(ValueError, match='finite'):
    _curriculum(difficulty=np.array([1.0, np.nan]))


def _loader(cur, seed=0, batch=2):
  """Document i is three copies of id 100 + i, one document per row (the loader tests'
  fake tokenizer), so the rows show which document each draw took."""
  tok = SimpleNamespace(
    encode=lambda text: np.array([int(w) for w in text.split()], np.int32), cls_id=1, sep_id=2
  )
  docs = [' '.join([str(100 + i)] * 3) for i in range(N)]
  return Loader(docs, tok, shards=ShardSpec.create(batch, 1, 0, 1), seq_len=12,
                framing=('cls_id', 'sep_id'), preprocess=lambda b: b, seed=seed, train=True,
                curriculum=cur)  # fmt: skip


def _docs(batches):
  return [int(t) - 100 for b in batches for t in b['tokens'][:, 1]]


def test_loader_stage_draws_easy_first_and_resumes_exactly():
  """The checkpoint holds loader.get_state() as JSON (training/checkpointing.py), so a
  restore here is what a killed train.py run does on restart (tests/training/test_resume.py
  kills one): the curriculum adds no state of its own, only the draw index."""
  cur = _curriculum('baby_steps', steps=20, stages=4)  # Steps 0-4: the 10 easiest (30..39).
  loader = _loader(cur)
  first = _docs(itertools.islice(loader, 5))
  assert len(first) == 10 and min(first) >= 30
  later = _docs(itertools.islice(loader, 15))  # Steps 5-19: up to 40 admitted.
  assert min(later) < 30
  for restore in range(6):  # Restored every 4 batches, across the stage boundaries.
    state = json.loads(json.dumps(loader.get_state()))
    restored = _loader(cur)
    restored.set_state(state)
    assert _docs(itertools.islice(restored, 4)) == _docs(itertools.islice(loader, 4)), restore
    loader = restored
  assert _docs(itertools.islice(_loader(cur, seed=1), 5)) != first


def test_length_and_file_scores_through_a_fine_tuning_experiment(spm_path, tmp_path):
  finetune_runs.write_sst2(tmp_path, 64, 8)
  config = finetune_runs.tiny(glue_config.get_config('sst2'), spm_path, tmp_path)
  config.total_steps = 40
  config.curriculum.difficulty = 'length'
  config.curriculum.schedule = 'baby_steps'
  config.curriculum.steps, config.curriculum.stages = 40, 4  # 16 shortest for 10 steps.
  exp = experiment.build(config, str(tmp_path / 'run'))
  records = tasks.load_examples(config.data, 'train')
  lengths = curriculum.token_lengths(records, exp.tokenizer)
  assert lengths[0] == len(exp.tokenizer.encode(records[0]['text_a']))
  shards = ShardSpec.create(config.batch_size, 0, 0, 1)
  batches = list(itertools.islice(exp.loader('train', shards), 10))
  seen = [int(i) for b in batches for i in b['example_id']]
  assert max(lengths[i] for i in seen) <= np.sort(lengths, kind='stable')[15]
  # A file of scores, one per train record: the reverse of the length order.
  path = tmp_path / 'scores.txt'
  path.write_text('# minus the length\n' + ''.join(f'{-v}\n' for v in lengths))
  config.curriculum.difficulty = str(path)
  batches = list(itertools.islice(experiment.build(config, str(tmp_path / 'run')).loader(
    'train', shards), 10))  # fmt: skip
  seen = [int(i) for b in batches for i in b['example_id']]
  assert min(lengths[i] for i in seen) >= np.sort(lengths, kind='stable')[-16]
  path.write_text('1\n2\n')
  with pytest.raises(ValueError, match='holds 2 difficulty scores; the train split has 64'):
    experiment.build(config, str(tmp_path / 'run')).loader('train', shards)
  path.write_text('1\nhard\n')
  with pytest.raises(ValueError, match="'hard' is not a difficulty score"):
    experiment.build(config, str(tmp_path / 'run')).loader('train', shards)
