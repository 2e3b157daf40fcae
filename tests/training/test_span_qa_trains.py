"""SQuAD fine-tuning end to end: train() on a SQuAD JSON fixture whose answers are planted,
then eval.py's evaluate_checkpoint, which decodes spans over doc-stride windows."""

import json
import os
import random

import numpy as np
import pytest

from configs import squad as squad_config
from evaluation import checkpoint_eval, during_training, loop
from training import harness as harness_lib
from training import state as state_lib

# Each context holds exactly one colour word, the answer to "which colour is named ?".
_COLOURS = ('red', 'blue', 'green', 'yellow', 'purple', 'orange', 'black', 'white')
_FILLER = tuple(f'f{i}' for i in range(40))
_QUESTION = ('which', 'colour', 'is', 'named', '?')
_SPECIAL = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


def _write_squad(path, n: int, seed: int) -> None:
  """`n` questions, one per paragraph: 30-80 filler words with one colour planted at a random
  place, so longer contexts span two windows and one of them holds no answer."""
  rng = random.Random(seed)
  paragraphs = []
  for i in range(n):
    words = rng.choices(_FILLER, k=rng.randint(30, 80))
    at, answer = rng.randint(0, len(words)), rng.choice(_COLOURS)
    words.insert(at, answer)
    context = ' '.join(words)
    start = len(' '.join(words[:at])) + (at > 0)  # Its character offset.
    assert context[start : start + len(answer)] == answer
    qa = {'id': f'q{seed}_{i}', 'question': ' '.join(_QUESTION)}
    qa['answers'] = [{'text': answer, 'answer_start': start}]
    paragraphs.append({'context': context, 'qas': [qa]})
  with open(path, 'w', encoding='utf-8') as f:
    json.dump({'version': '1.1', 'data': [{'title': 'colours', 'paragraphs': paragraphs}]}, f)


@pytest.mark.slow
def test_squad_fine_tune_learns_the_planted_answers(tmp_path):
  vocab = tmp_path / 'vocab.txt'
  vocab.write_text('\n'.join(_SPECIAL + _COLOURS + _FILLER + _QUESTION) + '\n', encoding='utf-8')
  _write_squad(tmp_path / 'train.json', 40, seed=0)
  _write_squad(tmp_path / 'dev.json', 24, seed=1)
  workdir = str(tmp_path / 'run')
  config = squad_config.get_config('v1.1')
  config.data.squad_file, config.data.eval_squad_file = (
    str(tmp_path / 'train.json'),
    str(tmp_path / 'dev.json'),
  )
  config.data.tokenizer_path = str(vocab)
  config.model.preset = 'bert-tiny'
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim = 2, 128
  config.model.dropout_rate = 0.0
  config.seq_len, config.batch_size, config.peak_flops_per_device = 64, 8, 1e9
  config.objective.doc_stride, config.objective.max_query_length = 16, 16
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 60, 60, 60
  config.log_every_steps = 10
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 4
  config.optimizer.warmup_ratio = 0.0

  run = harness_lib.Harness(config, workdir)
  state, shardings = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  before = loop.evaluate_task(run, state.params, run.predict_step(shardings.params))
  run.checkpointer.close()
  during_training.train_and_evaluate(config, workdir)
  result = checkpoint_eval.evaluate_checkpoint(config, workdir)

  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    losses = [r['loss'] for r in map(json.loads, f) if 'loss' in r]
  assert len(losses) == 6 and np.mean(losses[-2:]) < 0.5 * losses[0], losses
  assert result['scores']['squad_f1'] >= before['scores']['squad_f1'] + 0.4, (before, result)
  with open(os.path.join(workdir, 'eval.json')) as f:
    saved = json.load(f)
  assert set(saved['scores']) == {'squad_em', 'squad_f1'}
  assert saved['task'] == 'v1.1' and saved['objective'] == 'objectives.span_qa'
  assert saved['examples'] == {'validation': 24}  # Questions, not windows.
  assert saved['metrics']['coverage'] == 1.0
