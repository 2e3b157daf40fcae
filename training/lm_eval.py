"""Language-model evaluation of a decoder: perplexity, and GPT-3-style few-shot prompting.

    python -m training.lm_eval perplexity --model RUN_OR_CONVERTED --text valid.txt \\
      [--context_len 512 --stride 256]
    python -m training.lm_eval fewshot --model RUN_OR_CONVERTED --config configs/fewshot.py:sst2 \\
      --glue_dir ../shared/data/glue [--shots 4] [--limit 200] [--out result.json]

`--model` is a train.py run directory (checkpoints/ and config.json; its newest checkpoint
is read) or a converted directory (model.json, models/convert/converted.py); either way
the model is `heads.CausalLM`.

Perplexity frames the whole text as one document the way objectives/clm.py frames a
segment, BOS text EOS, and predicts every token after the BOS (the text's tokens and the
EOS): `tokens` is len(ids) - 1. Long texts are scored in sliding windows (the Hugging Face
perplexity recipe): the first window scores all its targets; each later window ends
`stride` targets further on, takes as much left context as `context_len` allows, and scores
only its new targets, so every target is scored exactly once with at least
`context_len - stride` tokens of context (stride == context_len: disjoint chunks).

Few-shot prompting (Brown et al. 2020, sec. 2): each evaluation example gets its own k
demonstrations drawn from the train split (`prompt.sampling`: 'random' as in GPT-3, or
'balanced' across labels), each rendered with the template and its label's completion,
joined by the separator, then the query's rendered template. 'rank' mode classifies by the
candidate completion of highest log-likelihood (optionally per token); 'generate' mode
decodes greedily and matches the normalized text against the candidates.
"""

import argparse
import functools
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from training import task_metrics

# ---------------------------------------------------------------------------------------------
# Loading.
# ---------------------------------------------------------------------------------------------


def _converted_tokenizer(path: str, files: Sequence[str]):
  """The first tokenizer file of a converted checkpoint that data/tokenizers.py can read."""
  from data import tokenizers

  for name in files:
    file = name if os.path.isabs(name) else os.path.join(path, name)
    if os.path.isfile(file) and (file.endswith('.model') or file.endswith('.txt')):
      if not file.endswith('merges.txt'):
        return tokenizers.load_tokenizer(file)
  raise FileNotFoundError(
    f'{path}: none of its tokenizer files {list(files)} is a SentencePiece .model or a '
    'WordPiece vocab.txt (byte-level BPE is not supported here); pass tokenizer_path.'
  )


def load_decoder(path: str, tokenizer_path: str | None = None):
  """A causal LM and its tokenizer from a train.py run or a converted directory.

  Args:
    path: a train.py run directory (newest checkpoint) or a converted directory.
    tokenizer_path: a tokenizer file to use instead of the checkpoint's own.

  Returns:
    (model, params, tokenizer): `heads.CausalLM`, its params, a data/tokenizers Tokenizer.
  """
  from data import tokenizers
  from models import heads
  from models.convert import converted, from_run

  if from_run.is_run(path):
    c = from_run.load_run(path, 'gpt2')
    tokenizer = tokenizers.load_tokenizer(tokenizer_path or c.tokenizer_files[0])
  else:
    c = converted.load(path)
    if tokenizer_path:
      tokenizer = tokenizers.load_tokenizer(tokenizer_path)
    else:
      tokenizer = _converted_tokenizer(path, c.tokenizer_files)
  if 'causal_lm' not in c.heads:
    raise ValueError(f'{path}: a {c.family} checkpoint without a causal LM (heads: {c.heads}).')
  model = heads.CausalLM(c.config)
  return model, converted.head_params(c, 'causal_lm'), tokenizer


# ---------------------------------------------------------------------------------------------
# Scoring blocks of rows.
# ---------------------------------------------------------------------------------------------


def _max_positions(model) -> int:
  return model.cfg.max_positions


def _padded_length(n: int, limit: int) -> int:
  """The smallest power of two >= n (at least 32), capped at `limit`: few shapes compile."""
  return min(max(32, 1 << max(n - 1, 0).bit_length()), limit)


def _row_log_probs(params, inputs, segment_ids, positions, targets, weights, *, model):
  """Weighted sum over each row of log p(target | inputs so far): [batch] float32."""
  logits = model.apply({'params': params}, inputs, segment_ids, positions)  # [b, l, vocab]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [b, l]
  return jnp.sum(jnp.where(weights > 0, picked * weights, 0.0), axis=-1)


def make_scorer(model) -> Callable:
  """A jitted `score(params, rows) -> [batch]` of weighted target log-probabilities.

  `rows` holds [batch, length] arrays inputs, segment_ids (1 real, 0 padding), positions,
  targets and weights; one shape compiles once.
  """
  fn = jax.jit(functools.partial(_row_log_probs, model=model))

  def score(params, rows: dict) -> np.ndarray:
    names = ('inputs', 'segment_ids', 'positions', 'targets', 'weights')
    return np.asarray(fn(params, *(rows[n] for n in names)), np.float64)

  return score


def _rows(sequences: Sequence[np.ndarray], first_scored: Sequence[int], length: int, pad: int):
  """Next-token rows [len(sequences), length]: a sequence of up to length + 1 ids is read as
  inputs ids[:-1] and targets ids[1:]; target ids[j] counts when j >= its first_scored."""
  n = len(sequences)
  inputs = np.full((n, length), pad, np.int32)
  targets = np.full((n, length), pad, np.int32)
  weights = np.zeros((n, length), np.float32)
  segment_ids = np.zeros((n, length), np.int32)
  for i, (ids, first) in enumerate(zip(sequences, first_scored, strict=True)):
    if len(ids) > length + 1:
      raise ValueError(f'A sequence of {len(ids)} ids does not fit rows of {length} inputs.')
    m = max(len(ids) - 1, 0)  # Inputs (and targets) of this row.
    inputs[i, :m], targets[i, :m] = ids[:m], ids[1 : m + 1]
    segment_ids[i, :m] = 1
    weights[i, max(first - 1, 0) : m] = 1.0  # Target ids[j] sits at row position j - 1.
  positions = np.broadcast_to(np.arange(length, dtype=np.int32), (n, length))
  return dict(
    inputs=inputs, segment_ids=segment_ids, positions=positions, targets=targets, weights=weights
  )


def _score_sequences(score, params, sequences, first_scored, length, pad, batch_size):
  """[len(sequences)] weighted log-probs, in fixed [batch_size, length] blocks."""
  out = []
  for start in range(0, len(sequences), batch_size):
    chunk = list(sequences[start : start + batch_size])
    firsts = list(first_scored[start : start + batch_size])
    real = len(chunk)
    # Pad the last block with empty rows (zero weight) so its shape matches the others.
    chunk += [np.zeros(0, np.int32)] * (batch_size - real)
    firsts += [0] * (batch_size - real)
    out.append(score(params, _rows(chunk, firsts, length, pad))[:real])
  return np.concatenate(out) if out else np.zeros(0)


# ---------------------------------------------------------------------------------------------
# Perplexity.
# ---------------------------------------------------------------------------------------------


def frame_document(tokenizer, text: str) -> np.ndarray:
  """BOS text EOS, as objectives/clm.py frames a segment."""
  ids = np.asarray(tokenizer.encode(text), np.int32)
  return np.concatenate([[tokenizer.bos_id], ids, [tokenizer.eos_id]]).astype(np.int32)


def windows(n: int, context_len: int, stride: int) -> list[tuple[int, int, int]]:
  """Sliding windows over a sequence of n ids: (begin, end, first_scored).

  A window reads inputs ids[begin:end - 1] (at most context_len) and scores the targets
  ids[first_scored:end]; target j is predicted from ids[begin:j]. The first window scores
  all of its targets, each later one the next `stride`, so targets 1..n-1 are each scored
  exactly once, with at least context_len - stride ids of context after the first window.
  """
  if not 0 < stride <= context_len:
    raise ValueError(f'stride={stride} must be in [1, context_len={context_len}].')
  spans = [(0, min(context_len + 1, n), 1)]  # ids[0] (BOS) is never a target.
  while spans[-1][1] < n:
    first = spans[-1][1]
    end = min(first + stride, n)
    spans.append((max(end - 1 - context_len, 0), end, first))
  return spans


def perplexity(
  model, params, tokenizer, text: str, *, context_len: int, stride: int, batch_size: int = 8
) -> dict:
  """Perplexity of `text` as one BOS ... EOS document, in sliding windows.

  Args:
    model, params, tokenizer: a causal LM (see `load_decoder`).
    text: the whole text.
    context_len: model inputs per window (at most the model's position table).
    stride: new targets per window after the first; context >= context_len - stride.
    batch_size: windows per jitted call ([batch_size, context_len] blocks).

  Returns:
    {'nll_sum' (nats), 'tokens' (targets scored: len(ids) - 1), 'perplexity',
    'bits_per_token', 'windows'}.
  """
  if context_len > _max_positions(model):
    raise ValueError(f'context_len={context_len} > model max positions {_max_positions(model)}.')
  ids = frame_document(tokenizer, text)
  spans = windows(len(ids), context_len, stride)
  log_probs = _score_sequences(
    make_scorer(model),
    params,
    [ids[b:e] for b, e, _ in spans],
    [f - b for b, _, f in spans],  # First scored target, relative to the window.
    context_len,
    tokenizer.pad_id,
    batch_size,
  )
  nll_sum = -float(np.sum(log_probs))
  tokens = len(ids) - 1
  mean = nll_sum / tokens
  return {
    'nll_sum': nll_sum,
    'tokens': tokens,
    'perplexity': float(np.exp(mean)),
    'bits_per_token': mean / float(np.log(2.0)),
    'windows': len(spans),
  }


# ---------------------------------------------------------------------------------------------
# Few-shot prompting.
# ---------------------------------------------------------------------------------------------


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

  budget = p.get('max_len', 0) if max_len is None else max_len
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
  limit = min(max_len or _max_positions(model), _max_positions(model))
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
  length = _padded_length(max(len(s) for s in sequences) - 1, limit)
  scores = _score_sequences(
    make_scorer(model), params, sequences, first_scored, length, tokenizer.pad_id, batch_size
  ).reshape(len(prompts), len(candidates))
  if length_normalize:
    scores = scores / np.asarray([len(c) for c in candidate_ids], np.float64)
  return scores


def _greedy_step(params, tokens, lengths, *, model):
  """Argmax next token after each row's `lengths` real tokens: [batch] int32."""
  index = jnp.arange(tokens.shape[1])
  segment_ids = (index[None, :] < lengths[:, None]).astype(jnp.int32)
  positions = jnp.broadcast_to(index, tokens.shape)
  logits = model.apply({'params': params}, tokens, segment_ids, positions)  # [b, l, vocab]
  last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
  return jnp.argmax(last.astype(jnp.float32), axis=-1).astype(jnp.int32)


def greedy_generate(
  model,
  params,
  tokenizer,
  prompts: Sequence[str],
  max_new_tokens: int,
  *,
  max_len: int = 0,
  batch_size: int = 8,
  stop_at_newline: bool = True,
) -> list[str]:
  """Greedy continuations of BOS + each prompt, cut at EOS and (optionally) a newline.

  No KV cache: each step recomputes the whole row at one fixed padded length, so the step
  compiles once; the cost is max_new_tokens full forward passes per batch. Prompts longer
  than the length minus max_new_tokens lose tokens on the left. (A SentencePiece model
  trained with the default normalization maps newlines to spaces, so there EOS or
  max_new_tokens ends a generation.)
  """
  limit = min(max_len or _max_positions(model), _max_positions(model))
  if max_new_tokens >= limit:
    raise ValueError(f'max_new_tokens={max_new_tokens} leaves no room for a prompt in {limit}.')
  contexts = [
    np.concatenate([[tokenizer.bos_id], tokenizer.encode(p)]).astype(np.int32)[
      -(limit - max_new_tokens) :
    ]
    for p in prompts
  ]
  length = _padded_length(max(len(c) for c in contexts) + max_new_tokens, limit)
  step = jax.jit(functools.partial(_greedy_step, model=model))
  texts = []
  for start in range(0, len(contexts), batch_size):
    chunk = contexts[start : start + batch_size]
    tokens = np.full((batch_size, length), tokenizer.pad_id, np.int32)
    lengths = np.ones(batch_size, np.int32)  # Filler rows: one pad token.
    for i, ids in enumerate(chunk):
      tokens[i, : len(ids)] = ids
      lengths[i] = len(ids)
    first = lengths.copy()
    done = np.zeros(batch_size, bool)
    done[len(chunk) :] = True
    for _ in range(max_new_tokens):
      next_ids = np.asarray(step(params, tokens, lengths))
      live = ~done
      tokens[live, lengths[live]] = next_ids[live]
      lengths[live] += 1
      done |= next_ids == tokenizer.eos_id
      if stop_at_newline:
        done |= [
          ('\n' in _decode(tokenizer, tokens[i, first[i] : lengths[i]])) for i in range(batch_size)
        ]
      if done.all():
        break
    for i in range(len(chunk)):
      texts.append(_decode(tokenizer, tokens[i, first[i] : lengths[i]]))
  if stop_at_newline:
    texts = [t.split('\n')[0] for t in texts]
  return texts


def _decode(tokenizer, ids) -> str:
  ids = list(ids)
  if tokenizer.eos_id in ids:
    ids = ids[: ids.index(tokenizer.eos_id)]
  return tokenizer.decode(ids)


def match_candidate(text: str, candidates: Sequence[str]) -> int:
  """Index of the candidate a generation names (SQuAD-normalized: equal, or its first
  words), else -1."""
  generated = task_metrics.normalize_answer(text)
  for i, cand in enumerate(candidates):
    c = task_metrics.normalize_answer(cand)
    if c and (generated == c or generated.startswith(c + ' ')):
      return i
  return -1


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
  budget = p.max_len or (_max_positions(model) if model is not None else 0)
  prompts = []
  for r in eval_records:
    demos = draw_demonstrations(train_records, p.shots, p.seed, r['idx'], p.sampling)
    prompts.append(build_prompt(p, demos, r, tokenizer, budget))
  batch_size = p.get('batch_size', 8)
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
    texts = greedy_generate(
      model, params, tokenizer, prompts, p.max_new_tokens, max_len=p.max_len, batch_size=batch_size
    )
    predictions = np.asarray([match_candidate(t, p.candidates) for t in texts])
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
  task = spec.get('task', '')
  if task:
    from data import glue

    labels = glue.get_task(task).labels
    if labels and len(labels) == n:
      return list(labels)
  return [str(i) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------


def load_config(arg: str):
  """`path/to/config.py[:arg]` -> its get_config(arg) (or get_config())."""
  path, _, config_arg = arg.partition(':')
  module_spec = importlib.util.spec_from_file_location('_lm_eval_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(config_arg) if config_arg else module.get_config()


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m training.lm_eval', description=__doc__)
  sub = parser.add_subparsers(dest='command', required=True)
  ppl = sub.add_parser('perplexity', help='Perplexity of a text file.')
  ppl.add_argument('--text', required=True)
  ppl.add_argument('--context_len', type=int, default=0, help='0: the model max positions.')
  ppl.add_argument('--stride', type=int, default=0, help='0: context_len // 2.')
  few = sub.add_parser('fewshot', help='Few-shot GLUE classification.')
  few.add_argument('--config', required=True, help='configs/fewshot.py:TASK')
  few.add_argument('--glue_dir', required=True)
  few.add_argument('--shots', type=int, default=None)
  few.add_argument('--mode', choices=('rank', 'generate'), default=None)
  few.add_argument('--limit', type=int, default=0, help='Evaluate the first n records (0: all).')
  for p in (ppl, few):
    p.add_argument('--model', required=True, help='train.py run or converted directory.')
    p.add_argument('--tokenizer', default=None, help="Override the checkpoint's tokenizer.")
    p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--out', default=None, help='Also write the result as JSON here.')
  args = parser.parse_args(argv)

  model, params, tokenizer = load_decoder(args.model, args.tokenizer)
  if args.command == 'perplexity':
    with open(args.text, encoding='utf-8') as f:
      text = f.read()
    context_len = args.context_len or _max_positions(model)
    stride = args.stride or max(context_len // 2, 1)
    result = perplexity(
      model,
      params,
      tokenizer,
      text,
      context_len=context_len,
      stride=stride,
      batch_size=args.batch_size,
    )
    result.update(context_len=context_len, stride=stride, text=args.text)
  else:
    from data import glue

    config = load_config(args.config)
    with config.unlocked():
      if args.shots is not None:
        config.prompt.shots = args.shots
      if args.mode is not None:
        config.prompt.mode = args.mode
      config.prompt.batch_size = args.batch_size
    train_records = glue.read_glue(args.glue_dir, config.task, config.train_split)
    eval_records = glue.read_glue(args.glue_dir, config.task, config.eval_split)
    if args.limit:
      eval_records = eval_records[: args.limit]
    result = fewshot_eval(model, params, tokenizer, config, train_records, eval_records)
    result.update(task=config.task, split=config.eval_split)
  result['model'] = args.model
  print(json.dumps(result, indent=2))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2)
      f.write('\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
