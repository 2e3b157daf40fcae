"""Rewrites a run's newest checkpoint in the other layer layout, as a new run directory.

    python -m tools.relayout --to scanned WORKDIR NEW_WORKDIR
    python train.py --config ... --workdir NEW_WORKDIR --config.model.scan_layers=true

Looped layers (`block_0`, `block_1`, ...) and scanned layers (one `blocks` subtree with
a leading `layers` axis) compute the same function (models/convert/scan.py), so a run
may switch layouts between checkpoints. The params and the optimizer state that mirrors
them are converted; the data state and meta are copied unchanged (the config in meta
gets the new `model.scan_layers`), so `train.py --workdir NEW_WORKDIR` resumes the same
run. The run's other files (tokenizer, config.json, logs) come along.

A conversion killed part-way leaves NEW_WORKDIR without a complete checkpoint (Orbax
renames a checkpoint into place only when it is whole); running the same command
again finishes it.
"""

import argparse
import os
import shutil
import sys

from models.convert import scan
from training import checkpointing


def relayout_run(src: str, dst: str, to: str) -> int:
  """Writes the newest checkpoint of run `src` into run `dst` in layout `to`.

  Returns:
    The converted step.
  """
  relayout = {'scanned': scan.to_scanned, 'looped': scan.to_looped}[to]
  source = checkpointing.Checkpointer(src, keep=1, save_every=1)
  step = source.latest_step()
  if step is None:
    raise ValueError(f'No checkpoint in {src}/checkpoints.')
  target = checkpointing.Checkpointer(dst, keep=1, save_every=1)
  if target.latest_step() is not None:
    raise ValueError(f'{dst} already holds checkpoints; pick a new run directory.')
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns('checkpoints'), dirs_exist_ok=True)
  state, data, meta = source.restore_as_saved(step)
  source.close()
  meta = dict(meta)
  if 'config' in meta and 'model' in meta['config']:
    meta['config']['model']['scan_layers'] = to == 'scanned'
  target.save(step, relayout(scan.jax_to_numpy(state)), data, meta, force=True)
  target.close()
  return step


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m tools.relayout', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('--to', choices=('scanned', 'looped'), required=True)
  parser.add_argument('src', help='Run directory (its newest checkpoint is converted).')
  parser.add_argument('dst', help='New run directory.')
  args = parser.parse_args(argv)
  step = relayout_run(os.path.abspath(args.src), os.path.abspath(args.dst), args.to)
  print(f'Converted step {step} of {args.src} to the {args.to} layout in {args.dst}.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
