"""Fine-tuning tests' runs: the untrained model's dev scores, then train, then eval.py's;
and the keyword-sentiment SST-2 run that the compression and attribution tests share."""

import os
import random
import subprocess

from configs import base
from evaluation import checkpoint_eval, during_training, loop
from tests.training import runs
from training import compressed_run
from training import harness as harness_lib
from training import state as state_lib

_GOOD = ('great', 'wonderful', 'excellent', 'lovely', 'superb')
_BAD = ('awful', 'terrible', 'horrible', 'dreadful', 'poor')
SENTIMENT_WORDS = _GOOD + _BAD  # One of them carries each sentence's label.
_FILLER = ('the', 'film', 'was', 'a', 'story', 'of', 'people', 'and', 'it', 'this', 'plot')


def sentence(rng: random.Random, positive: bool) -> str:
  words = rng.choices(_FILLER, k=rng.randint(3, 8))
  words.insert(rng.randint(0, len(words)), rng.choice(_GOOD if positive else _BAD))
  return ' '.join(words)


def write_sst2(glue_dir, n_train: int, n_dev: int, seed: int = 0) -> None:
  """SST-2 in the download script's layout: a header, then sentence<TAB>label."""
  rng = random.Random(seed)
  os.makedirs(os.path.join(glue_dir, 'SST-2'), exist_ok=True)
  for split, n in (('train', n_train), ('dev', n_dev)):
    with open(os.path.join(glue_dir, 'SST-2', f'{split}.tsv'), 'w') as f:
      f.write('sentence\tlabel\n')
      for i in range(n):
        label = i % 2
        f.write(f'{sentence(rng, bool(label))}\t{label}\n')


def write_mnli(glue_dir, n: int) -> None:
  header = 'index\tsentence1\tsentence2\tgold_label\n'
  labels = ('entailment', 'neutral', 'contradiction')
  rng = random.Random(1)
  os.makedirs(os.path.join(glue_dir, 'MNLI'), exist_ok=True)
  for split in ('train', 'dev_matched', 'dev_mismatched'):
    with open(os.path.join(glue_dir, 'MNLI', f'{split}.tsv'), 'w') as f:
      f.write(header)
      for i in range(n + (split == 'dev_mismatched')):
        f.write(f'{i}\t{sentence(rng, True)}\t{sentence(rng, False)}\t{labels[i % 3]}\n')


def tiny(config, spm_path: str, glue_dir, **overrides):
  """A 2-layer, 64-wide model on the fixture data, sized for a 2-core CPU."""
  config.data.glue_dir = str(glue_dir)
  config.data.tokenizer_path = spm_path
  config.model.preset = 'bert-tiny'
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim = 2, 128
  config.seq_len, config.batch_size = 32, 8
  config.total_steps, config.eval_every_steps = 4, 4  # Sized in steps: no records read to size.
  config.peak_flops_per_device = 1e9
  for key, value in overrides.items():
    target, *path = key.split('.')
    node = config
    for name in [target, *path][:-1]:
      node = node[name]
    node[[target, *path][-1]] = value
  return config


# The keyword SST-2 run's model and shape, as train.py flags (tests/test_compress.py
# evaluates the run and its compressed copies with them).
KEYWORD_SIZES = ('--config.model.preset=bert-tiny', '--config.model.num_layers=2',
                 '--config.model.d_model=64', '--config.model.num_heads=2',
                 '--config.model.mlp_dim=128')  # fmt: skip
KEYWORD_SHAPE = ('--config.seq_len=32', '--config.batch_size=8')


def train_and_evaluate(config, workdir: str) -> tuple[dict, dict]:
  """(the freshly initialized model's evaluate_task result, evaluate_checkpoint's after
  training `config` in `workdir`): the same init the trainer starts from (seed 0)."""
  run = harness_lib.Harness(config, workdir)
  state, shardings = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  before = loop.evaluate_task(run, state.params, run.predict_step(shardings.params))
  during_training.train_and_evaluate(config, workdir)
  return before, checkpoint_eval.evaluate_checkpoint(config, workdir)


def short_run(config, workdir: str, steps: int = 8) -> tuple[dict, object]:
  """(evaluate_checkpoint's result, compressed_run.read_run) of a `steps`-step run of
  `config` in `workdir` at learning rate 3e-3 without dropout: the knowledge objectives'
  checks that the trainer and the evaluation feed their arrays to the model."""
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = steps
  config.optimizer.learning_rate, config.model.dropout_rate = 3e-3, 0.0
  during_training.train_and_evaluate(config, workdir)
  result = checkpoint_eval.evaluate_checkpoint(config, workdir)
  return result, compressed_run.read_run(workdir, base.get_config())


def keyword_sst2_run(spm_path: str, root) -> str:
  """A 40-step train.py fine-tuning run in `root`/run (its best checkpoint at step 20 or
  40) on a 320-sentence keyword-sentiment SST-2 written to `root`/glue (each sentence's
  label is carried by one planted word: `write_sst2`)."""
  glue_dir, run = os.path.join(root, 'glue'), os.path.join(root, 'run')
  write_sst2(glue_dir, 320, 64)
  overrides = (
    f'--config.data.glue_dir={glue_dir}', f'--config.data.tokenizer_path={spm_path}',
    *KEYWORD_SIZES, *KEYWORD_SHAPE, '--config.total_steps=40', '--config.eval_every_steps=20',
    '--config.checkpoint_every_steps=20', '--config.optimizer.learning_rate=3e-3',
    '--config.optimizer.warmup_steps=4', '--config.optimizer.warmup_ratio=0',
    '--config.model.dropout_rate=0', '--config.log_every_steps=20',
    '--config.peak_flops_per_device=1e9',
  )  # fmt: skip
  command = runs.command('train.py', run, *overrides, config='configs/glue.py:sst2')
  result = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-4000:]
  return run
