"""GPT-3-style zero-, one- and few-shot classification by a causal LM (Brown et al. 2020).

Each evaluation example gets its own k demonstrations drawn from the train split
(`prompt.sampling`: 'random' as in GPT-3, or 'balanced' across labels), each rendered
with the template and its label's completion, joined by the separator, then the query's
rendered template. 'rank' mode classifies by the candidate completion of highest
log-likelihood (optionally per token); 'generate' mode decodes greedily
(generation.py) and matches the normalized text against the candidates. The prompt
spec is a few-shot config (configs/fewshot.py).
"""

import functools
from collections.abc import Sequence

import numpy as np

from data import glue
from evaluation import generation, lm_scoring, task_metrics


def _prompt_spec(spec):
  return spec.prompt if 'prompt' in spec else spec


def render(spec, record: dict, completion: str = '') -> str:
  """One example through the template (`pair_template` when it has a second text)."""
  p = _prompt_spec(spec)
  template = p.pair_template if record.get('text_b') is not None else p.template
  if not template:
    raise ValueError('This record has a second text but the spec has no prompt.pair_template.')
  return template.format(text_a=record['text_a'], text_b=record.get('text_b')) + completion


def build_prompt(
  spec, demonstrations: Sequence[dict], record: dict, tokenizer=None, max_len: int | None = None
) -> str:
  """The demonstrations (with their label's completion), the separator, and the query.

  Args:
    spec: the few-shot config (configs/fewshot.py) or its `prompt` part.
    demonstrations: labelled records, in prompt order.
    record: the query; its label is not shown.
    tokenizer: with a token budget (`max_len`, else `prompt.max_len`; 0: none), the
      earliest demonstrations are dropped until BOS + prompt + the longest candidate (or
      `max_new_tokens` in generate mode) fits; a query too long on its own is
      left-truncated later, when scored.
    max_len: the budget, overriding `prompt.max_len`.
  """
  p = _prompt_spec(spec)
  shown = [render(p, d, p.candidates[d['label']]) for d in demonstrations]
  query = render(p, record)

  def join(parts):
    return p.separator.join([*parts, query])

  budget = p.max_len if max_len is None else max_len
  if tokenizer is None or not budget:
    return join(shown)
  if p.mode == 'generate':
    reserve = p.max_new_tokens
  else:
    reserve = max(len(tokenizer.encode(c)) for c in p.candidates)
  while shown and 1 + len(tokenizer.encode(join(shown))) + reserve > budget:
    shown = shown[1:]
  return join(shown)


def draw_demonstrations(
  train_records: Sequence[dict], k: int, seed: int, example_id: int, sampling: str = 'random'
) -> list[dict]:
  """k labelled train records for one evaluation example, a pure function of (seed, id).

  'random' draws k distinct records uniformly (GPT-3); 'balanced' gives each label k // L
  records (the remainder to labels drawn at random), then shuffles their order.
  """
  if k == 0:
    return []
  labelled = [r for r in train_records if r.get('label') is not None]
  rng = np.random.default_rng([seed, example_id])
  if sampling == 'random':
    index = rng.choice(len(labelled), size=min(k, len(labelled)), replace=False)
    return [labelled[i] for i in index]
  if sampling != 'balanced':
    raise ValueError(f"prompt.sampling={sampling!r}: expected 'random' or 'balanced'.")
  by_label: dict = {}
  for r in labelled:
    by_label.setdefault(r['label'], []).append(r)
  labels = sorted(by_label)
  counts = {label: k // len(labels) for label in labels}
  for label in rng.choice(labels, size=k % len(labels), replace=False):
    counts[label] += 1
  chosen = []
  for label in labels:
    pool = by_label[label]
    index = rng.choice(len(pool), size=min(counts[label], len(pool)), replace=False)
    chosen += [pool[i] for i in index]
  return [chosen[i] for i in rng.permutation(len(chosen))]


def score_candidates(
  model,
  params,
  tokenizer,
  prompts: Sequence[str],
  candidates: Sequence[str],
  *,
  length_normalize: bool = False,
  max_len: int = 0,
  batch_size: int = 8,
) -> np.ndarray:
  """log p(candidate | BOS prompt) for every prompt and candidate: [examples, candidates].

  Prompt and candidate are tokenized separately and concatenated (so each candidate's tokens
  are the same in every prompt); only the candidate's tokens are scored. Rows are padded on
  the right to one power-of-two length; a row longer than `max_len` (0: the model's
  position table) loses tokens on the left.

  Args:
    length_normalize: divide each sum by the candidate's token count.
  """
  limit = min(max_len or lm_scoring.max_positions(model), lm_scoring.max_positions(model))
  candidate_ids = [np.asarray(tokenizer.encode(c), np.int32) for c in candidates]
  if any(len(c) == 0 for c in candidate_ids):
    raise ValueError(f'A candidate encodes to no tokens: {list(candidates)}.')
  sequences, first_scored = [], []
  for prompt in prompts:
    context = np.concatenate([[tokenizer.bos_id], tokenizer.encode(prompt)]).astype(np.int32)
    for cand in candidate_ids:
      # Left-truncate: the model reads all but the last id, at most `limit` of them.
      ids = np.concatenate([context, cand])[-(limit + 1) :]
      sequences.append(ids)
      first_scored.append(len(ids) - len(cand))
  length = lm_scoring.padded_length(max(len(s) for s in sequences) - 1, limit)
  scores = lm_scoring.score_sequences(
    lm_scoring.make_scorer(model),
    params,
    sequences,
    first_scored,
    length,
    tokenizer.pad_id,
    batch_size,
  ).reshape(len(prompts), len(candidates))
  if length_normalize:
    scores = scores / np.asarray([len(c) for c in candidate_ids], np.float64)
  return scores


def fewshot_eval(
  model, params, tokenizer, spec, train_records, eval_records, *, scorer=None
) -> dict:
  """Few-shot accuracy of a causal LM on labelled records.

  Args:
    spec: the few-shot config (configs/fewshot.py): `task` (label names) and `prompt`.
    train_records, eval_records: read_glue-style records; demonstrations come from the first.
    scorer: `scorer(prompts, candidates) -> [examples, candidates]` replacing
      `score_candidates` in rank mode (tests plant one).

  Returns:
    {'accuracy', 'examples', 'shots', 'mode', 'label_counts' (gold), 'predicted_counts'
    (with 'unmatched' for generations naming no candidate), 'correct_counts'}.
  """
  p = spec.prompt
  # Demonstrations are dropped to fit the budget, or else the model's position table.
  budget = p.max_len or (lm_scoring.max_positions(model) if model is not None else 0)
  prompts = []
  for r in eval_records:
    demos = draw_demonstrations(train_records, p.shots, p.seed, r['idx'], p.sampling)
    prompts.append(build_prompt(p, demos, r, tokenizer, budget))
  batch_size = p.batch_size
  if p.mode == 'rank':
    if scorer is None:
      scorer = functools.partial(
        score_candidates,
        model,
        params,
        tokenizer,
        length_normalize=p.length_normalize,
        max_len=p.max_len,
        batch_size=batch_size,
      )
    predictions = np.argmax(scorer(prompts, list(p.candidates)), axis=-1)
  elif p.mode == 'generate':
    texts = generation.greedy_generate(
      model, params, tokenizer, prompts, p.max_new_tokens, max_len=p.max_len, batch_size=batch_size
    )
    predictions = np.asarray([generation.match_candidate(t, p.candidates) for t in texts])
  else:
    raise ValueError(f"prompt.mode={p.mode!r}: expected 'rank' or 'generate'.")
  labels = np.asarray([r['label'] for r in eval_records])
  names = _label_names(spec, len(p.candidates))
  result = {
    'accuracy': task_metrics.accuracy(predictions, labels),
    'examples': len(eval_records),
    'shots': p.shots,
    'mode': p.mode,
    'label_counts': {n: int(np.sum(labels == i)) for i, n in enumerate(names)},
    'predicted_counts': {n: int(np.sum(predictions == i)) for i, n in enumerate(names)},
    'correct_counts': {
      n: int(np.sum((labels == i) & (predictions == i))) for i, n in enumerate(names)
    },
  }
  if p.mode == 'generate':
    result['predicted_counts']['unmatched'] = int(np.sum(predictions < 0))
  return result


def _label_names(spec, n: int) -> list[str]:
  task = spec.task
  if task:
    labels = glue.get_task(task).labels
    if labels and len(labels) == n:
      return list(labels)
  return [str(i) for i in range(n)]
