"""Evaluate the newest checkpoint of a run on its held-out split.

  python eval.py --config configs/quickstart.py --workdir /tmp/quickstart

Prints a table and writes <workdir>/eval.json (MLM: loss, accuracy and
perplexity over masked tokens; CLM: loss, accuracy and perplexity).
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

from training import launch

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory holding checkpoints/.')
flags.mark_flags_as_required(['config', 'workdir'])


def evaluate(config, workdir: str) -> dict:
  """Restores the newest checkpoint in `workdir` and evaluates it; returns the figures."""
  import jax

  from training import trainer

  run = trainer.Run(config, workdir)
  step = run.checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {run.checkpointer.directory}: train first.')
  abstract, shardings = run.abstract_state()
  state, _, meta = run.checkpointer.restore(step, abstract)
  run.checkpointer.close()
  trainer.check_tokenizer(meta, run.exp, run.checkpointer.directory)
  values = run.evaluate(state.params, run.eval_step(shardings.params))
  result = {'step': step, 'objective': config.objective.module, **values}
  if jax.process_index() == 0:
    print(f'{"metric":<12} {"value":>12}')
    for name, value in result.items():
      text = f'{value:>12.4f}' if isinstance(value, float) else f'{value!s:>12}'
      print(f'{name:<12} {text}')
    with open(os.path.join(workdir, 'eval.json'), 'w') as f:
      json.dump(result, f, indent=2)
  return result


def main(argv):
  del argv
  launch.initialize_distributed()
  evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
