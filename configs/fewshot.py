"""GPT-3-style zero-, one- and few-shot GLUE evaluation of a causal LM (Brown et al. 2020).

  python -m tools.lm_eval fewshot --model RUN_OR_CONVERTED \\
    --config configs/fewshot.py:sst2 --glue_dir ../shared/data/glue --shots 4 --limit 200

`get_config(task)` takes a GLUE task name ('sst2', 'cola', 'mrpc', 'qqp', 'mnli', 'qnli',
'rte', 'wnli'); STS-B is a regression and has no prompt here. The templates follow the
formats of GPT-3's appendix G where it has one (RTE: "{premise}\\nquestion: {hypothesis}
True or False?\\nanswer:"; MNLI as its ANLI: True / Neither / False) and a plain
"Question ... Answer:" form otherwise. `prompt.candidates[label]` is the completion of each
label, in the label order of data/glue.py. Demonstrations are drawn per evaluation example
from the train split ('random', as GPT-3; or 'balanced' over labels), seeded by
(prompt.seed, the example's idx).

Hardware: CPU for tiny models; a GPU for GPT-2 sizes. Expected: chance-level accuracy for
this repository's tiny runs (not yet measured on a pretrained GPT-2; GPT-3 reports RTE
63.5 few-shot at 175B, Table 3.8, and small models near chance). This is an evaluation
spec, not a training config: the model comes from --model.
"""

from ml_collections import config_dict

# task -> (template, pair_template, candidates in label order)
_PROMPTS = {
  'sst2': ('Review: {text_a}\nSentiment:', '', (' negative', ' positive')),
  'cola': (
    'Sentence: {text_a}\nQuestion: Is this sentence grammatical?\nAnswer:',
    '',
    (' no', ' yes'),
  ),
  'mrpc': (
    '',
    'Sentence 1: {text_a}\nSentence 2: {text_b}\nQuestion: Do both sentences mean the same '
    'thing?\nAnswer:',
    (' no', ' yes'),
  ),
  'qqp': (
    '',
    'Question 1: {text_a}\nQuestion 2: {text_b}\nQuestion: Do both questions ask the same '
    'thing?\nAnswer:',
    (' no', ' yes'),
  ),
  'mnli': (
    '',
    '{text_a}\nquestion: {text_b} True, False or Neither?\nanswer:',
    (' True', ' Neither', ' False'),
  ),
  'qnli': (
    '',
    'Question: {text_a}\nSentence: {text_b}\nQuestion: Does the sentence answer the question?'
    '\nAnswer:',
    (' yes', ' no'),
  ),
  'rte': ('', '{text_a}\nquestion: {text_b} True or False?\nanswer:', (' True', ' False')),
  'wnli': ('', '{text_a}\nquestion: {text_b} True or False?\nanswer:', (' False', ' True')),
}


def get_config(task: str = 'sst2'):
  if task not in _PROMPTS:
    raise ValueError(f'No few-shot prompt for GLUE task {task!r}; known: {sorted(_PROMPTS)}.')
  template, pair_template, candidates = _PROMPTS[task]
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
