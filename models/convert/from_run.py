"""A `train.py` run directory as a converted checkpoint, so that it exports like one.

    python -m models.convert --to hf --family bert WORKDIR OUT

reads the run's newest checkpoint (its params only: the optimizer state stays
behind), its `config.json` and its tokenizer, and hands them to the exporter.
The family names the Hugging Face format to write (a `bert-*` preset trained
with MLM exports as `bert`, `gpt2-*` with CLM as `gpt2`, `t5-*` or `bart-*`
with denoising as `t5` or `bart`); export refuses a config the family cannot
express, naming the field.
"""

import glob
import os

from models import convert
from models.convert import mapping, scan
from models.convert.converted import Converted


def is_run(path: str) -> bool:
  return os.path.isdir(os.path.join(path, 'checkpoints')) and os.path.exists(
    os.path.join(path, 'config.json')
  )


def _tokenizer_file(workdir: str, config) -> str:
  kept = sorted(glob.glob(os.path.join(workdir, 'tokenizer', '*.model')))  # The trainer's copy.
  kept += sorted(glob.glob(os.path.join(workdir, 'tokenizer', '*.txt')))
  path = config.data.tokenizer_path or (kept[0] if kept else '')
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f'{workdir}: no tokenizer in {workdir}/tokenizer.')
  return path


def run_model(workdir: str):
  """(model config with looped layers, tokenizer path) of run `workdir`, without weights."""
  import json

  import ml_collections

  from data import tokenizers
  from training import model_setup

  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  tokenizer_path = _tokenizer_file(workdir, config)
  cfg = model_setup.model_config(config, tokenizers.load_tokenizer(tokenizer_path).vocab_size)
  if getattr(cfg, 'scan_layers', False):
    cfg = cfg.replace(scan_layers=False, remat='none')  # latest_params loops the layers.
  return cfg, tokenizer_path


def latest_params(workdir: str) -> tuple[dict, int]:
  """(params as NumPy arrays, layers looped; step) of run `workdir`'s newest checkpoint;
  the optimizer state stays behind."""
  import json

  import orbax.checkpoint as ocp

  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state',))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints.')
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  params = scan.jax_to_numpy(restored.state['params'])
  with open(os.path.join(workdir, 'config.json')) as f:
    if json.load(f)['model'].get('scan_layers'):
      params = scan.to_looped(params)
  return params, step


def load_run(workdir: str, family_name: str) -> Converted:
  """The newest checkpoint of run `workdir` as a `Converted` of family `family_name`."""
  cfg, tokenizer_path = run_model(workdir)
  params, step = latest_params(workdir)
  family = convert.get_family(family_name)
  models = {name: head.model(cfg) for name, head in family.heads.items()}
  heads = mapping.check_tree(mapping.flatten(params), models, family.stack)
  return Converted(
    family=family_name,
    config=cfg,
    params=params,
    heads=heads,
    source=f'{os.path.abspath(workdir)} step {step}',
    tokenizer_files=[tokenizer_path],
  )
