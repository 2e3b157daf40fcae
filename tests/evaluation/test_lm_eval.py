"""LM evaluation (evaluation/perplexity.py, fewshot.py, generation.py, lm_scoring.py): perplexity windows, candidate scoring, prompts, greedy decoding,
few-shot accuracy and loading, each against a hand-computed reference on a tiny decoder."""

import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import fewshot as fewshot_config
from data import tokenizers
from evaluation import fewshot, generation, lm_scoring, perplexity
from models import heads, presets

TEXT = (
  'The tokenizer module splits a string into tokens. Each token has a type and a value, '
  'and the parser reads them one by one to build the syntax tree of the program.'
)


@pytest.fixture(scope='module')
def tokenizer(spm_path):
  return tokenizers.load_tokenizer(spm_path)


@pytest.fixture(scope='module')
def decoder(tokenizer):
  """A 1-layer, 32-wide random GPT-2 over the 1000-piece fixture vocabulary."""
  cfg = presets.get_config(
    'gpt2-tiny',
    vocab_size=tokenizer.vocab_size,
    num_layers=1,
    d_model=32,
    num_heads=2,
    mlp_dim=64,
    max_len=64,
  )
  model = heads.CausalLM(cfg)
  tokens = np.ones((1, 8), np.int32)
  params = nn.unbox(model.init(jax.random.key(0), tokens, tokens, tokens)['params'])
  # Sharpen the random tied embedding so that log-probs and argmaxes are far from uniform.
  # (The final LayerNorm keeps the inputs' scale; the tied output scales the logits by 20.)
  params['decoder']['embed']['token']['embedding'] *= 20.0
  return model, params


_FORWARD = {}  # id(model) -> jitted unpadded forward pass (one compile per row length).


def log_softmax_of(model, params, ids) -> np.ndarray:
  """[len(ids), vocab] log-probabilities of one unpadded row (no lm_eval code)."""
  if id(model) not in _FORWARD:

    def forward(params, ids):
      positions = jax.numpy.arange(ids.shape[1])[None]
      logits = model.apply({'params': params}, ids, jax.numpy.ones_like(ids), positions)
      return jax.nn.log_softmax(logits[0].astype(jax.numpy.float32), axis=-1)

    _FORWARD[id(model)] = jax.jit(forward)
  return np.asarray(_FORWARD[id(model)](params, np.asarray(ids, np.int32)[None]), np.float64)


def test_perplexity_of_one_window_is_one_forward_pass(decoder, tokenizer):
  model, params = decoder
  ids = perplexity.frame_document(tokenizer, TEXT)
  assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
  assert len(ids) - 1 <= 64
  log_probs = log_softmax_of(model, params, ids[:-1])
  nll = -log_probs[np.arange(len(ids) - 1), ids[1:]]
  result = perplexity.perplexity(model, params, tokenizer, TEXT, context_len=64, stride=32)
  assert result['windows'] == 1 and result['tokens'] == len(ids) - 1
  np.testing.assert_allclose(result['nll_sum'], nll.sum(), rtol=1e-5)
  np.testing.assert_allclose(result['perplexity'], np.exp(nll.mean()), rtol=1e-5)
  np.testing.assert_allclose(result['bits_per_token'], nll.mean() / np.log(2), rtol=1e-5)
  assert np.isfinite(result['perplexity']) and result['perplexity'] > 1


@pytest.mark.parametrize(
  'n, context_len, stride', [(2, 8, 4), (9, 8, 4), (50, 8, 3), (50, 8, 8), (37, 16, 1), (5, 4, 4)]
)
def test_windows_score_every_target_once_with_enough_context(n, context_len, stride):
  spans = perplexity.windows(n, context_len, stride)
  scored = [j for _, end, first in spans for j in range(first, end)]
  assert scored == list(range(1, n))  # Each target once, in order.
  for begin, end, first in spans:
    assert end - 1 - begin <= context_len  # Inputs fit the window.
    assert begin < first <= end
    if first > 1:
      assert end - first <= stride
      # Target j sees ids[begin:j]: at least context_len - stride + 1 of them, or all.
      assert first - begin >= min(first, context_len - stride + 1)
  with pytest.raises(ValueError, match='stride'):
    perplexity.windows(n, context_len, context_len + 1)


def test_sliding_perplexity_matches_per_token_brute_force(decoder, tokenizer):
  model, params = decoder
  context_len, stride = 12, 5
  ids = perplexity.frame_document(tokenizer, TEXT)
  expected = 0.0
  for begin, end, first in perplexity.windows(len(ids), context_len, stride):
    for j in range(first, end):  # Target j alone, from exactly the context the rule gives it.
      expected -= log_softmax_of(model, params, ids[begin:j])[-1, ids[j]]
  results = [
    perplexity.perplexity(
      model, params, tokenizer, TEXT, context_len=context_len, stride=stride, batch_size=b
    )
    for b in (3, 16)
  ]
  for result in results:
    assert result['tokens'] == len(ids) - 1
    assert result['windows'] == 1 + -(-(len(ids) - 1 - context_len) // stride)
    np.testing.assert_allclose(result['nll_sum'], expected, rtol=1e-5)
  # Less context than one window over the whole text: a different (here larger) NLL.
  full = perplexity.perplexity(model, params, tokenizer, TEXT, context_len=64, stride=64)
  assert not np.isclose(full['nll_sum'], expected, rtol=1e-4)


def test_score_candidates_is_the_sum_of_candidate_log_probs(decoder, tokenizer):
  model, params = decoder
  prompts = ['Review: a fine film\nSentiment:', 'Question: is it true?\nAnswer:']
  candidates = [' negative', ' positive', ' not sure at all']
  expected = np.zeros((2, 3))
  counts = np.zeros(3)
  for i, prompt in enumerate(prompts):
    context = [tokenizer.bos_id, *tokenizer.encode(prompt)]
    for k, cand in enumerate(candidates):
      cand_ids = list(tokenizer.encode(cand))
      ids = context + cand_ids
      log_probs = log_softmax_of(model, params, ids[:-1])
      positions = np.arange(len(context) - 1, len(ids) - 1)  # Inputs predicting the candidate.
      expected[i, k] = log_probs[positions, np.asarray(ids)[positions + 1]].sum()
      counts[k] = len(cand_ids)
  got = fewshot.score_candidates(model, params, tokenizer, prompts, candidates, batch_size=4)
  assert got.shape == (2, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  mean = fewshot.score_candidates(
    model, params, tokenizer, prompts, candidates, length_normalize=True
  )
  np.testing.assert_allclose(mean, expected / counts, rtol=1e-5)

  # A row longer than max_len loses its leftmost tokens (BOS first).
  cand_ids = list(tokenizer.encode(candidates[2]))
  ids = ([tokenizer.bos_id, *tokenizer.encode(prompts[0])] + cand_ids)[-(8 + 1) :]
  log_probs = log_softmax_of(model, params, ids[:-1])
  positions = np.arange(len(ids) - len(cand_ids) - 1, len(ids) - 1)
  truncated = log_probs[positions, np.asarray(ids)[positions + 1]].sum()
  got = fewshot.score_candidates(model, params, tokenizer, prompts[:1], candidates, max_len=8)
  np.testing.assert_allclose(got[0, 2], truncated, rtol=1e-5)


def test_build_prompt_demonstrations_separator_and_pair_template():
  rte = fewshot_config.get_config('rte')
  demos = [
    {'text_a': 'A cat sat.', 'text_b': 'An animal sat.', 'label': 0, 'idx': 3},
    {'text_a': 'It rained.', 'text_b': 'It was dry.', 'label': 1, 'idx': 7},
  ]
  query = {'text_a': 'He ran.', 'text_b': 'He moved.', 'label': 0, 'idx': 1}
  assert fewshot.build_prompt(rte, demos, query) == (
    'A cat sat.\nquestion: An animal sat. True or False?\nanswer: True\n\n'
    'It rained.\nquestion: It was dry. True or False?\nanswer: False\n\n'
    'He ran.\nquestion: He moved. True or False?\nanswer:'
  )
  sst2 = fewshot_config.get_config('sst2')
  single = {'text_a': 'great', 'text_b': None, 'label': 1, 'idx': 0}
  assert fewshot.build_prompt(sst2, [], single) == 'Review: great\nSentiment:'
  assert fewshot.build_prompt(sst2, [single], single) == (
    'Review: great\nSentiment: positive\n\nReview: great\nSentiment:'
  )
  with pytest.raises(ValueError, match='pair_template'):
    fewshot.build_prompt(sst2, [], query)


def test_build_prompt_drops_the_earliest_demonstrations_to_fit(tokenizer):
  config = fewshot_config.get_config('sst2')
  demos = [
    {'text_a': f'film number {i} was ' + 'quite good ' * 3, 'text_b': None, 'label': i % 2}
    for i in range(6)
  ]
  query = {'text_a': 'the last one', 'text_b': None, 'label': 0}
  full = fewshot.build_prompt(config, demos, query)
  reserve = max(len(tokenizer.encode(c)) for c in config.prompt.candidates)
  budget = 1 + len(tokenizer.encode(full)) + reserve - 10  # Too small for all six.
  with config.unlocked():
    config.prompt.max_len = budget
  cut = fewshot.build_prompt(config, demos, query, tokenizer)
  kept = cut.count('Sentiment:') - 1
  assert 0 < kept < 6
  # The newest demonstrations stay (the ones next to the query), and one more would not fit.
  assert cut == fewshot.build_prompt(fewshot_config.get_config('sst2'), demos[6 - kept :], query)
  assert 1 + len(tokenizer.encode(cut)) + reserve <= budget
  longer = fewshot.build_prompt(fewshot_config.get_config('sst2'), demos[5 - kept :], query)
  assert 1 + len(tokenizer.encode(longer)) + reserve > budget


def test_demonstrations_are_seeded_per_example_and_balanced():
  train = [{'text_a': str(i), 'label': int(i % 5 == 0), 'idx': i} for i in range(100)]
  a = fewshot.draw_demonstrations(train, 8, 0, 17)
  assert a == fewshot.draw_demonstrations(train, 8, 0, 17)
  assert a != fewshot.draw_demonstrations(train, 8, 0, 18)
  assert a != fewshot.draw_demonstrations(train, 8, 1, 17)
  assert len({r['idx'] for r in a}) == 8
  assert fewshot.draw_demonstrations(train, 0, 0, 17) == []
  for example in range(20):
    b = fewshot.draw_demonstrations(train, 7, 0, example, 'balanced')
    labels = [r['label'] for r in b]
    assert len({r['idx'] for r in b}) == 7 and sorted([labels.count(0), labels.count(1)]) == [3, 4]


def manual_greedy(model, params, tokenizer, prompt, steps):
  ids = [tokenizer.bos_id, *tokenizer.encode(prompt)]
  new = []
  for _ in range(steps):
    next_id = int(np.argmax(log_softmax_of(model, params, ids)[-1]))
    if next_id == tokenizer.eos_id:
      break
    ids.append(next_id)
    new.append(next_id)
  return tokenizer.decode(new)


def test_greedy_generate_is_an_argmax_loop(decoder, tokenizer):
  model, params = decoder
  prompts = ['The parser reads', 'Each token has a', 'import the module and']
  expected = [manual_greedy(model, params, tokenizer, p, 6) for p in prompts]
  got = generation.greedy_generate(
    model, params, tokenizer, prompts, 6, batch_size=2, stop_at_newline=False
  )
  assert got == expected
  assert any(got)  # Something was generated.
  assert got == generation.greedy_generate(
    model, params, tokenizer, prompts, 6, batch_size=2, stop_at_newline=False
  )


def test_match_candidate_normalizes():
  candidates = [' negative', ' positive']
  assert generation.match_candidate(' Positive.', candidates) == 1
  assert generation.match_candidate('negative review', candidates) == 0
  assert generation.match_candidate('positively', candidates) == -1
  assert generation.match_candidate('', candidates) == -1


def test_fewshot_accuracy_with_a_planted_scorer(tokenizer):
  config = fewshot_config.get_config('sst2')
  with config.unlocked():
    config.prompt.shots = 2
  train = [{'text_a': f'train {i}', 'text_b': None, 'label': i % 2, 'idx': i} for i in range(10)]
  texts_labels = [('good', 1), ('bad', 0), ('good', 0), ('bad', 0), ('good', 1)]
  evals = [
    {'text_a': t, 'text_b': None, 'label': y, 'idx': i} for i, (t, y) in enumerate(texts_labels)
  ]
  seen = []

  def scorer(prompts, candidates):
    seen.extend(prompts)
    queries = [p.split('\n\n')[-1] for p in prompts]  # The query, after the demonstrations.
    return np.asarray([[0.0, 1.0] if 'good' in q else [1.0, 0.0] for q in queries])

  result = fewshot.fewshot_eval(None, None, tokenizer, config, train, evals, scorer=scorer)
  # Predictions 1, 0, 1, 0, 1 against labels 1, 0, 0, 0, 1: four right.
  assert result['accuracy'] == pytest.approx(0.8)
  assert result['examples'] == 5 and result['shots'] == 2
  assert result['label_counts'] == {'0': 3, '1': 2}
  assert result['predicted_counts'] == {'0': 2, '1': 3}
  assert result['correct_counts'] == {'0': 2, '1': 2}
  assert all(p.count('Sentiment:') == 3 for p in seen)  # Two demonstrations and the query.


def test_fewshot_rank_agrees_with_score_candidates(decoder, tokenizer):
  model, params = decoder
  config = fewshot_config.get_config('rte')
  with config.unlocked():
    config.prompt.shots = 1
  train = [
    {'text_a': f'Fact {i}.', 'text_b': f'Claim {i}.', 'label': i % 2, 'idx': i} for i in range(4)
  ]
  evals = [
    {'text_a': 'It is on.', 'text_b': 'It works.', 'label': i % 2, 'idx': 10 + i} for i in range(6)
  ]
  result = fewshot.fewshot_eval(model, params, tokenizer, config, train, evals)
  # max_len 0: demonstrations are dropped to fit the model's 64 positions.
  budget = model.cfg.max_positions
  demos = [fewshot.draw_demonstrations(train, 1, 0, r['idx']) for r in evals]
  prompts = [
    fewshot.build_prompt(config, d, r, tokenizer, budget) for d, r in zip(demos, evals, strict=True)
  ]
  scores = fewshot.score_candidates(model, params, tokenizer, prompts, config.prompt.candidates)
  predictions = scores.argmax(-1)
  assert result['accuracy'] == pytest.approx(np.mean(predictions == [r['label'] for r in evals]))
  assert result['predicted_counts'] == {
    'entailment': int(np.sum(predictions == 0)),
    'not_entailment': int(np.sum(predictions == 1)),
  }
  with config.unlocked():
    config.prompt.mode, config.prompt.max_new_tokens = 'generate', 3
  generated = fewshot.fewshot_eval(model, params, tokenizer, config, train, evals)
  assert sum(generated['predicted_counts'].values()) == 6  # Matched or 'unmatched'.


def test_load_decoder_from_a_converted_directory(decoder, tokenizer, spm_path, tmp_path):
  from models.convert import converted

  model, params = decoder
  out = str(tmp_path / 'converted')
  os.makedirs(out)
  shutil.copy(spm_path, os.path.join(out, 'spm.model'))
  numpy_params = jax.tree.map(np.asarray, params)
  converted.save(
    out,
    converted.Converted(
      family='gpt2',
      config=model.cfg,
      params=numpy_params,
      heads=['causal_lm'],
      tokenizer_files=['spm.model'],
    ),
  )
  loaded_model, loaded_params, loaded_tokenizer = lm_scoring.load_decoder(out)
  assert loaded_model.cfg == model.cfg
  assert loaded_tokenizer.fingerprint() == tokenizer.fingerprint()
  ids = perplexity.frame_document(tokenizer, TEXT)[:20]
  np.testing.assert_allclose(
    log_softmax_of(loaded_model, loaded_params, ids), log_softmax_of(model, params, ids), rtol=1e-6
  )


def test_fewshot_config_covers_the_classification_tasks():
  from data import glue

  for task in ('sst2', 'cola', 'mrpc', 'qqp', 'mnli', 'qnli', 'rte', 'wnli'):
    config = fewshot_config.get_config(task)
    assert config.is_locked and config.task == task
    assert len(config.prompt.candidates) == len(glue.get_task(task).labels)
    assert config.prompt.template or config.prompt.pair_template
  with pytest.raises(ValueError, match='stsb'):
    fewshot_config.get_config('stsb')
