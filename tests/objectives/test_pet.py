"""PET (objectives/pet.py) and its prompts (data/prompts.py): the cloze rows, the scores
against the MLM head's own log-probabilities, the loss by hand, the few-shot train set
(data/tasks.few_shot), the prompt shared with GPT-style few-shot evaluation, and a short
few-shot run through train.py."""

import functools
import json
import os

import jax
import numpy as np
import pytest

from configs import fewshot as fewshot_config
from configs import pet as pet_config
from data import prompts, tasks, tokenizers
from objectives import pet
from tests.training import finetune_runs
from training import harness as harness_lib
from training import state as state_lib


def _single_piece_words(tokenizer, candidates, n=2):
  """The first `n` of `candidates` that the fixture's SentencePiece model keeps whole."""
  words = [w for w in candidates if len(tokenizer.encode(w)) == 1]
  assert len(words) >= n, words
  return words[:n]


def test_cloze_rows_keep_the_template_and_the_slot_and_truncate_the_texts(spm_path):
  tokenizer = tokenizers.load_tokenizer(spm_path)
  template = 'Review: {text_a}\nSentiment: {answer}.'
  record = {'text_a': 'the module and the class ' * 20, 'idx': 3}
  row = prompts.encode_cloze(tokenizer, template, record, 2, 32)
  tokens, mask_positions = row['tokens'], row['mask_positions']
  assert row['segment_ids'].sum() == 32  # Truncated to fill the row exactly.
  assert tokens[0] == tokenizer.cls_id and tokens[31] == tokenizer.sep_id
  assert np.all(tokens[mask_positions] == tokenizer.mask_id) and len(mask_positions) == 2
  assert int(np.sum(tokens == tokenizer.mask_id)) == 2
  # The template's pieces survive whole around a shortened text.
  head = tokenizer.encode('Review: ').tolist()
  tail = [*tokenizer.encode('\nSentiment: ').tolist()]
  assert tokens[1 : 1 + len(head)].tolist() == head
  start = mask_positions[0] - len(tail)
  assert tokens[start : mask_positions[0]].tolist() == tail
  assert tokens[mask_positions[-1] + 1 : 31].tolist() == tokenizer.encode('.').tolist()
  text = tokenizer.encode(record['text_a']).tolist()
  assert tokens[1 + len(head) : start].tolist() == text[: start - 1 - len(head)]
  np.testing.assert_array_equal(row['positions'][:32], np.arange(32))

  pair = prompts.encode_cloze(
    tokenizer, '{text_a} ? {answer} , {text_b}', {'text_a': 'one', 'text_b': 'two'}, 1, 16
  )
  n = int(pair['segment_ids'].sum())
  expected = [tokenizer.cls_id, *tokenizer.encode('one'), *tokenizer.encode(' ? ')]
  expected += [tokenizer.mask_id, *tokenizer.encode(' , '), *tokenizer.encode('two')]
  assert pair['tokens'][:n].tolist() == [*expected, tokenizer.sep_id]
  assert pair['tokens'][n:].tolist() == [0] * (16 - n) and not pair['token_types'].any()

  with pytest.raises(ValueError, match='no room for the text'):
    prompts.encode_cloze(
      tokenizer, 'a long fixed template ' * 10 + '{text_a}{answer}', record, 1, 16
    )
  with pytest.raises(ValueError, match='exactly once'):
    prompts.fields('{text_a} {answer} {answer}')
  with pytest.raises(ValueError, match='unknown field'):
    prompts.fields('{text_a} {label} {answer}')


def test_answer_words_must_be_known_and_equally_long(spm_path):
  tokenizer = tokenizers.load_tokenizer(spm_path)
  one, two = _single_piece_words(tokenizer, ('the', 'and', 'is', 'of', 'to', 'in'))
  np.testing.assert_array_equal(
    prompts.answer_ids(tokenizer, (one, two)), [tokenizer.encode(one), tokenizer.encode(two)]
  )
  long = 'qzxvkjwq'  # No such word: several pieces.
  assert len(tokenizer.encode(long)) > 1
  with pytest.raises(ValueError, match='as many pieces'):
    prompts.answer_ids(tokenizer, (one, long))
  with pytest.raises(ValueError, match='unknown to the vocabulary'):
    prompts.answer_ids(tokenizer, (one, ''))
  # In its slot: glued to the text before it, a SentencePiece word loses its '▁'.
  before = tokenizer.encode('Answer:').tolist()
  candidates = ('and', 'is', 'of', 'to', 'in', 'for', 'the', 'a', 'on', 'as')
  glued_words = [w for w in candidates if len(tokenizer.encode('Answer:' + w)) == len(before) + 1]
  glued_words = [w for w in glued_words if len(tokenizer.encode(w)) == 1][:2]
  assert len(glued_words) == 2, glued_words
  glued = prompts.answer_ids(tokenizer, glued_words, 'Answer:{answer}')
  for word, ids in zip(glued_words, glued, strict=True):
    assert ids.tolist() == tokenizer.encode('Answer:' + word).tolist()[len(before) :]
    assert tokenizer.id_to_piece(int(ids[0])) == word != tokenizer.id_to_piece(
      int(tokenizer.encode(word)[0]))  # fmt: skip
  spaced = prompts.answer_ids(tokenizer, glued_words, 'Answer: {answer}')
  assert spaced.tolist() == [tokenizer.encode(w).tolist() for w in glued_words]


def test_the_prompt_is_shared_with_gpt_style_fewshot_evaluation():
  for task in fewshot_config.TASKS:
    prompt, spec = prompts.get(task), fewshot_config.get_config(task).prompt
    assert list(spec.candidates) == [' ' + word for word in prompt.words], task
    template = prompt.template or prompt.pair_template
    assert (spec.template or spec.pair_template) + ' {answer}' == template, task
    objective = pet.configure(pet_config.get_config(task).objective)
    assert objective.prompt == prompt, task
  assert fewshot_config.get_config('sst2').prompt.template == 'Review: {text_a}\nSentiment:'
  with pytest.raises(ValueError, match='texts before'):
    prompts.causal_form(prompts.get('eprstmt').template)


def test_configure_checks_the_verbalizer_against_the_labels():
  c = pet_config.get_config('sst2').objective
  c.verbalizer = 'terrible,great'
  c.pattern = '{text_a} It was {answer}.'
  objective = pet.configure(c)
  assert objective.prompt.words == ('terrible', 'great')
  assert objective.prompt.template == '{text_a} It was {answer}.'
  c.verbalizer = 'bad,okay,good'
  with pytest.raises(ValueError, match='3 word'):
    pet.configure(c)
  c.verbalizer, c.pattern = 'bad,good', '{text_a} It was good.'
  with pytest.raises(ValueError, match='exactly once'):
    pet.configure(c)
  with pytest.raises(ValueError, match='No prompt'):
    pet_config.get_config('stsb')


@pytest.fixture(scope='module')
def pet_batch(spm_path, tmp_path_factory):
  """(harness, params, batch, words): a tiny PET model's fresh params and a 3-row batch of
  2-piece-slot clozes whose last row is eval padding."""
  glue_dir = tmp_path_factory.mktemp('pet_glue')
  finetune_runs.write_sst2(glue_dir, 8, 8)
  config = finetune_runs.tiny(pet_config.get_config('sst2'), spm_path, glue_dir)
  tokenizer = tokenizers.load_tokenizer(spm_path)
  pairs = [
    w for w in ('the', 'and', 'is', 'of', 'to', 'in', 'for', 'a') if len(tokenizer.encode(w)) == 1
  ]
  words = (f'{pairs[0]} {pairs[1]}', f'{pairs[2]} {pairs[3]}')  # Two pieces each.
  config.objective.verbalizer = ','.join(words)
  run = harness_lib.Harness(config, str(tmp_path_factory.mktemp('pet_run')))
  state, _ = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  objective = run.exp.objective
  answers = prompts.answer_ids(tokenizer, words)
  template = objective.prompt.template
  texts = ('the film was great', 'a story of awful people', 'it was')
  rows = [prompts.encode_cloze(tokenizer, template, {'text_a': t}, 2, 32) for t in texts]
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  batch['segment_ids'][2] = 0  # A padding row, as the loader appends to the last eval batch.
  batch.update(
    answer_ids=np.stack([answers] * 3), label=np.array([1, 0, 1]), example_id=np.array([0, 1, -1])
  )
  batch = objective.make_preprocess(config.objective, tokenizer, 0)(batch)
  return run, state.params, batch, answers


def test_scores_are_the_mlm_heads_log_probabilities_of_the_words(pet_batch):
  run, params, batch, answers = pet_batch
  predict = jax.jit(functools.partial(run.exp.objective.predict_fn, model=run.model))
  out = jax.device_get(predict(params, batch))
  # The whole MaskedLM at every position, then the words' pieces at the slot by hand.
  logits = np.asarray(
    run.model.apply({'params': params}, batch['inputs'], batch['segment_ids'],
                    batch['positions'], batch['token_types']), np.float64
  )  # fmt: skip
  log_p = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))  # [3, 32, vocab]
  slot = batch['mask_positions']  # [3, 2]
  expected = np.array(
    [[sum(log_p[b, slot[b, j], answers[label, j]] for j in range(2)) for label in range(2)]
     for b in range(3)]
  )  # fmt: skip
  np.testing.assert_allclose(out['scores'], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out['prediction'], np.argmax(expected, -1))
  np.testing.assert_array_equal(out['label'], [1, 0, 1])


def test_loss_is_the_cross_entropy_over_the_labels_and_padding_weighs_nothing(pet_batch):
  run, params, batch, _ = pet_batch
  objective = run.exp.objective
  loss_fn = functools.partial(objective.loss_fn, rng=None, model=run.model)
  loss, metrics = jax.jit(loss_fn)(params, batch)
  scores = np.asarray(objective.predict_fn(params, batch, model=run.model)['scores'], np.float64)
  log_q = scores - np.log(np.sum(np.exp(scores), -1, keepdims=True))  # Over the 2 labels.
  np.testing.assert_allclose(float(loss), -np.mean([log_q[0, 1], log_q[1, 0]]), rtol=1e-5)
  assert float(metrics['loss'][1]) == 2.0 == float(metrics['accuracy'][1])
  correct = (np.argmax(scores[:2], -1) == [1, 0]).sum()
  assert float(metrics['accuracy'][0]) == correct


def test_few_shot_draws_k_per_label_by_seed_in_file_order(tmp_path):
  records = [{'text_a': f's{i}', 'text_b': None, 'label': i % 3, 'idx': i} for i in range(60)]
  subset = tasks.few_shot(records, 4, seed=0)
  assert [sum(r['label'] == k for r in subset) for k in range(3)] == [4, 4, 4]
  assert [r['idx'] for r in subset] == sorted(r['idx'] for r in subset)
  assert subset == tasks.few_shot(records, 4, seed=0)  # A function of the seed alone.
  assert subset != tasks.few_shot(records, 4, seed=1)
  with pytest.raises(ValueError, match='only 20'):
    tasks.few_shot(records, 21, seed=0)
  with pytest.raises(ValueError, match='regression'):
    tasks.few_shot([dict(records[0], label=0.5)], 1, seed=0)
  # Through the config: the train split is drawn, the dev split stays whole.
  finetune_runs.write_sst2(tmp_path, 40, 12)
  config = pet_config.get_config('sst2')
  config.data.glue_dir = str(tmp_path)
  config.data.train_per_label = 5
  train = tasks.load_examples(config.data, 'train')
  assert len(train) == 10 and sorted(r['label'] for r in train) == [0] * 5 + [1] * 5
  assert len(tasks.load_examples(config.data, 'eval')) == 12
  config.data.source = 'conll'
  with pytest.raises(ValueError, match='draws per class label'):
    tasks.load_examples(config.data, 'train')


@pytest.mark.slow
def test_a_few_shot_pet_run_learns_the_keyword_task_and_is_evaluated_once(spm_path, tmp_path):
  """32 keyword sentences of each label, 60 steps of 8 through train.py's own loop, one
  evaluation at the end over 61 dev sentences (the last batch padded): dev accuracy climbs
  from the untrained model's."""
  glue_dir = tmp_path / 'glue'
  finetune_runs.write_sst2(glue_dir, 320, 61)
  tokenizer = tokenizers.load_tokenizer(spm_path)
  words = _single_piece_words(tokenizer, ('bad', 'good', 'no', 'yes', 'not', 'is', 'the', 'and'))
  config = finetune_runs.tiny(pet_config.get_config('sst2'), spm_path, glue_dir)
  config.objective.verbalizer = ','.join(words)
  config.data.train_per_label = 32
  config.total_steps = config.eval_every_steps = 60
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 4
  config.optimizer.warmup_ratio = 0.0
  config.model.dropout_rate = 0.0
  config.log_every_steps = 10
  workdir = str(tmp_path / 'run')
  before, result = finetune_runs.train_and_evaluate(config, workdir)
  assert result['scores']['sst2'] >= 0.8 > before['scores']['sst2'] + 0.2, (before, result)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  evaluations = [r for r in records if any(k.startswith('eval/') for k in r)]
  assert [r['step'] for r in evaluations] == [60], evaluations
  assert result['examples'] == {'dev': 61}  # Every dev sentence once, padding rows none.
