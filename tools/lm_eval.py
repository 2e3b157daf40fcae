"""Language-model evaluation of a decoder: perplexity, and GPT-3-style few-shot prompting.

    python -m tools.lm_eval perplexity --model RUN_OR_CONVERTED --text valid.txt \\
      [--context_len 512 --stride 256]
    python -m tools.lm_eval fewshot --model RUN_OR_CONVERTED --config configs/fewshot.py:sst2 \\
      --glue_dir ../shared/data/glue [--shots 4] [--limit 200] [--out result.json]

`--model` is a train.py run directory (checkpoints/ and config.json; its newest checkpoint
is read) or a converted directory (model.json, models/convert/converted.py); either way
the model is `heads.CausalLM` (evaluation/lm_scoring.py). Perplexity is
evaluation/perplexity.py (sliding windows, each token scored once); few-shot prompting is
evaluation/fewshot.py, its prompt format in the config (any `--config.prompt.*` key can be
overridden; `--shots` and `--mode` are shorthands). Prints the result as JSON.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from data import glue
from evaluation import fewshot, lm_scoring, perplexity

_COMMANDS = ('perplexity', 'fewshot')
_MODEL = flags.DEFINE_string('model', None, 'train.py run or converted directory.')
_TOKENIZER = flags.DEFINE_string('tokenizer', None, "Override the checkpoint's tokenizer.")
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Rows per jitted call.')
_OUT = flags.DEFINE_string('out', None, 'Also write the result as JSON here.')
_TEXT = flags.DEFINE_string('text', None, 'perplexity: the text file.')
_CONTEXT_LEN = flags.DEFINE_integer('context_len', 0, 'perplexity: 0 is the model max positions.')
_STRIDE = flags.DEFINE_integer('stride', 0, 'perplexity: 0 is context_len // 2.')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'fewshot: configs/fewshot.py:TASK.')
_GLUE_DIR = flags.DEFINE_string('glue_dir', None, 'fewshot: GLUE folder (download layout).')
_SHOTS = flags.DEFINE_integer('shots', None, 'fewshot: demonstrations per example.')
_MODE = flags.DEFINE_enum('mode', None, ('rank', 'generate'), 'fewshot: rank or generate.')
_LIMIT = flags.DEFINE_integer('limit', 0, 'fewshot: evaluate the first n records (0: all).')
flags.mark_flag_as_required('model')


def _perplexity(model, params, tokenizer) -> dict:
  if not _TEXT.value:
    raise app.UsageError('perplexity needs --text.')
  with open(_TEXT.value, encoding='utf-8') as f:
    text = f.read()
  context_len = _CONTEXT_LEN.value or lm_scoring.max_positions(model)
  stride = _STRIDE.value or max(context_len // 2, 1)
  result = perplexity.perplexity(
    model,
    params,
    tokenizer,
    text,
    context_len=context_len,
    stride=stride,
    batch_size=_BATCH_SIZE.value,
  )
  return {**result, 'context_len': context_len, 'stride': stride, 'text': _TEXT.value}


def _fewshot(model, params, tokenizer) -> dict:
  config = _CONFIG.value
  if config is None or not _GLUE_DIR.value:
    raise app.UsageError('fewshot needs --config configs/fewshot.py:TASK and --glue_dir.')
  if _SHOTS.value is not None:
    config.prompt.shots = _SHOTS.value
  if _MODE.value is not None:
    config.prompt.mode = _MODE.value
  config.prompt.batch_size = _BATCH_SIZE.value
  train_records = glue.read_glue(_GLUE_DIR.value, config.task, config.train_split)
  eval_records = glue.read_glue(_GLUE_DIR.value, config.task, config.eval_split)
  if _LIMIT.value:
    eval_records = eval_records[: _LIMIT.value]
  result = fewshot.fewshot_eval(model, params, tokenizer, config, train_records, eval_records)
  return {**result, 'task': config.task, 'split': config.eval_split}


def main(argv):
  if len(argv) != 2 or argv[1] not in _COMMANDS:
    raise app.UsageError(f'Say what to evaluate: {" or ".join(_COMMANDS)} (got {argv[1:]}).')
  model, params, tokenizer = lm_scoring.load_decoder(_MODEL.value, _TOKENIZER.value)
  run = _perplexity if argv[1] == 'perplexity' else _fewshot
  result = {**run(model, params, tokenizer), 'model': _MODEL.value}
  print(json.dumps(result, indent=2))
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(result, f, indent=2)
      f.write('\n')


if __name__ == '__main__':
  app.run(main)
