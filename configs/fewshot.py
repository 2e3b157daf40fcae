"""GPT-3-style zero-, one- and few-shot GLUE evaluation of a causal LM (Brown et al. 2020).

  python -m tools.lm_eval fewshot --model RUN_OR_CONVERTED \\
    --config configs/fewshot.py:sst2 --glue_dir ../shared/data/glue --shots 4 --limit 200

`get_config(task)` takes a GLUE task name ('sst2', 'cola', 'mrpc', 'qqp', 'mnli', 'qnli',
'rte', 'wnli'); STS-B is a regression and has no prompt here. The prompts are
data/prompts.py's, which PET (configs/pet.py) fills with [MASK]s: here the text before the
answer slot is the template, and `prompt.candidates[label]` is the completion of each label
(a space and the label's word), in the label order of data/glue.py. Demonstrations are
drawn per evaluation example from the train split ('random', as GPT-3; or 'balanced' over
labels), seeded by (prompt.seed, the example's idx).

Hardware: CPU for tiny models; a GPU for GPT-2 sizes. Expected: chance-level accuracy for
this repository's tiny runs (not yet measured on a pretrained GPT-2; GPT-3 reports RTE
63.5 few-shot at 175B, Table 3.8, and small models near chance). This is an evaluation
spec, not a training config: the model comes from --model.
"""

from ml_collections import config_dict

from data import prompts

# GLUE's classification tasks (STS-B is a regression): their prompts are data/prompts.py's.
TASKS = ('sst2', 'cola', 'mrpc', 'qqp', 'mnli', 'qnli', 'rte', 'wnli')


def get_config(task: str = 'sst2'):
  if task not in TASKS:
    raise ValueError(f'No few-shot prompt for GLUE task {task!r}; known: {sorted(TASKS)}.')
  prompt = prompts.get(task)
  template = prompts.causal_form(prompt.template)[0] if prompt.template else ''
  pair_template = prompts.causal_form(prompt.pair_template)[0] if prompt.pair_template else ''
  with_answer = prompt.template or prompt.pair_template
  candidates = [prompts.causal_form(with_answer, word)[1] for word in prompt.words]
  c = config_dict.ConfigDict()
  c.task = task  # A data/glue.py task name.
  c.train_split = 'train'  # Demonstrations come from here.
  c.eval_split = 'dev'  # Evaluated records.
  c.prompt = config_dict.ConfigDict()
  c.prompt.template = template  # One-text tasks; {text_a}.
  c.prompt.pair_template = pair_template  # Two-text tasks; {text_a}, {text_b}.
  c.prompt.candidates = list(candidates)  # Completion of each label, in label order.
  c.prompt.separator = '\n\n'  # Between demonstrations (and before the query).
  c.prompt.shots = 0  # Demonstrations per example (k); 0 is zero-shot.
  c.prompt.seed = 0  # Demonstrations are a function of (seed, example idx).
  c.prompt.sampling = 'random'  # 'random' (GPT-3) or 'balanced' over labels.
  c.prompt.max_len = 0  # Token budget; earliest demonstrations drop first (0: model's).
  c.prompt.length_normalize = False  # Rank by mean rather than summed log-probability.
  c.prompt.mode = 'rank'  # 'rank' candidates by likelihood, or 'generate' greedily and match.
  c.prompt.max_new_tokens = 5  # Generate mode: tokens decoded per example.
  c.prompt.batch_size = 8  # Rows per jitted call.
  return c.lock()
