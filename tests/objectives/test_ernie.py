"""Tests of objectives/ernie.py: units per level, rates, stage mixing, determinism."""

import math

import numpy as np
import pytest
import scipy.stats

from data import word_units
from data.wordpiece import WordPieceTokenizer
from objectives import ernie, mlm
from tests.objective_config import objective_config

SPECIAL = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
NAMED = ['Python', 'Software', 'Foundation', 'Guido', 'manages', 'language', 'written']
NAMED += ['non', '##profit', 'group', 'version', '##.', ',', '.', ';']
STOP = ['the', 'The', 'of', 'a', 'by', 'is', 'and', 'in', 'to', 'it']
CAPITAL = [f'C{i}' for i in range(60)]
LOWER = [f'x{i}' for i in range(200)]
SUFFIX = [f'##y{i}' for i in range(20)]
CHINESE = list('我们喜欢自然语言处理今天天气很好')
PIECES = SPECIAL + NAMED + STOP + CAPITAL + LOWER + SUFFIX + CHINESE


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
  path = tmp_path_factory.mktemp('vocab') / 'vocab.txt'
  path.write_text('\n'.join(PIECES) + '\n', encoding='utf-8')
  return WordPieceTokenizer(str(path), lowercase=False)


def _ids(pieces):
  return np.array([PIECES.index(p) for p in pieces], np.int32)


def _objective(**kw):
  d = dict(
    mask_rate=0.15,
    mask_token_rate=0.8,
    random_token_rate=0.1,
    ernie_stage='mixed',
    ernie_level_weights=(1.0, 1.0, 1.0),
    max_unit_words=4,
    word_segmenter='',
  )
  d.update(kw)
  return objective_config(**d)


def _rows(tokens, epoch=0):
  n, length = tokens.shape
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': np.ones((n, length), np.int32),
    'positions': np.zeros((n, length), np.int32),
    'epoch': np.full(n, epoch),
    'example_id': np.arange(n),
  }


def _batch(batch_size=256, length=256, seed=0, epoch=0):
  """Two framed segments per row of capitalised words, stopwords, punctuation, lower-case
  words with suffixes and some [UNK]; a padded tail."""
  rng = np.random.default_rng(seed)
  groups = [_ids(CAPITAL), _ids(STOP), _ids([',', '.', ';']), _ids(LOWER), _ids(SUFFIX)]
  kind = rng.choice(len(groups), p=[0.25, 0.2, 0.08, 0.35, 0.12], size=(batch_size, length))
  tokens = np.zeros((batch_size, length), np.int32)
  for k, ids in enumerate(groups):
    tokens = np.where(kind == k, rng.choice(ids, size=tokens.shape), tokens)
  tokens = np.where(rng.random(tokens.shape) < 0.01, PIECES.index('[UNK]'), tokens)
  half = length // 2
  for column, piece in ((0, '[CLS]'), (half - 1, '[SEP]'), (half, '[CLS]'), (-1, '[SEP]')):
    tokens[:, column] = PIECES.index(piece)
  segment_ids = np.where(np.arange(length) < half, 1, 2)[None].repeat(batch_size, 0)
  padding = np.arange(length)[None] >= (length - rng.integers(0, 40, batch_size))[:, None]
  batch = _rows(np.where(padding, 0, tokens), epoch)
  batch['segment_ids'] = np.where(padding, 0, segment_ids).astype(np.int32)
  return batch


def _first_of(groups):
  """Unit first positions of a row written as a list of units, each a list of pieces."""
  return np.concatenate([np.full(len(g), sum(map(len, groups[:i]))) for i, g in enumerate(groups)])


SENTENCE = [
  ['[CLS]'],
  ['The'],
  ['Python', 'Software', 'Foundation'],
  ['manages'],
  ['the'],
  ['Python'],
  ['language'],
  [','],
  ['a'],
  ['non', '##profit'],
  ['group'],
  ['written'],
  ['by'],
  ['Guido'],
  ['version', '##.'],
  ['Python', 'Software'],
  ['[SEP]'],
]


def _units(tok, stage, pieces, **kw):
  batch = _rows(_ids(pieces)[None])
  first, level = ernie.make_units(_objective(ernie_stage=stage, **kw), tok, seed=0)(batch)
  assert level[0] == (ernie.LEVELS.index(stage))
  return first[0]


def test_heuristic_units_of_a_sentence(tok):
  pieces = [p for unit in SENTENCE for p in unit]
  words = []  # Each piece, its '##' continuations attached.
  for p in pieces:
    if p.startswith('##'):
      words[-1].append(p)
    else:
      words.append([p])
  np.testing.assert_array_equal(_units(tok, 'basic', pieces), _first_of(words))
  # Entities: runs of capitalised words that are not stopwords ('The' stays apart).
  np.testing.assert_array_equal(_units(tok, 'entity', pieces), _first_of(SENTENCE))
  phrases = [
    ['[CLS]'],
    ['The'],
    ['Python', 'Software', 'Foundation', 'manages'],
    ['the'],
    ['Python', 'language'],
    [','],
    ['a'],
    ['non', '##profit', 'group', 'written'],
    ['by'],
    ['Guido', 'version', '##.'],  # A word ending in punctuation ends its phrase.
    ['Python', 'Software'],
    ['[SEP]'],
  ]
  np.testing.assert_array_equal(_units(tok, 'phrase', pieces), _first_of(phrases))
  # At most `max_unit_words` words per unit.
  capped = phrases[:2] + [['Python', 'Software'], ['Foundation', 'manages']] + phrases[3:7]
  capped += [['non', '##profit', 'group'], ['written']] + phrases[8:]
  np.testing.assert_array_equal(_units(tok, 'phrase', pieces, max_unit_words=2), _first_of(capped))
  entities = SENTENCE[:2] + [['Python', 'Software'], ['Foundation']] + SENTENCE[3:]
  np.testing.assert_array_equal(
    _units(tok, 'entity', pieces, max_unit_words=2), _first_of(entities)
  )


def test_entity_runs(tok):
  # A capitalised stopword ('The'), a lower-case word or punctuation ends an entity.
  units = [['[CLS]'], ['C1', 'C2', 'C3'], ['x1'], ['C4'], ['The'], ['C5', 'C6'], [','], ['C7']]
  units += [['[SEP]']]
  np.testing.assert_array_equal(_units(tok, 'entity', sum(units, [])), _first_of(units))


@pytest.mark.parametrize('stage', ernie.LEVELS)
def test_rates_and_unit_integrity(tok, stage):
  batch = _batch(batch_size=512)
  cfg = _objective(ernie_stage=stage)
  first, level = ernie.make_units(cfg, tok, seed=3)(batch)
  inputs, selected = ernie.make_masker(cfg, tok, seed=3)(batch)
  tokens = batch['tokens']
  assert (level == ernie.LEVELS.index(stage)).all()
  rows = np.arange(len(tokens))[:, None]
  candidates = (batch['segment_ids'] > 0) & ~np.isin(tokens, tok.special_ids)
  assert not (selected & ~candidates).any()
  np.testing.assert_array_equal(inputs[~selected], tokens[~selected])
  # All or nothing per unit: selection and the [MASK] / other choice.
  np.testing.assert_array_equal(selected, selected[rows, first] & candidates)
  masked = inputs == tok.mask_id
  np.testing.assert_array_equal(masked[selected], masked[rows, first][selected])
  # Units are whole words.
  starts = word_units.token_word_starts(
    tokens, batch['segment_ids'], word_units.word_start_table(tok), tok.special_ids
  )
  unit_first = first == np.arange(tokens.shape[1])[None]
  assert not (unit_first & ~starts).any()

  # 15% of the tokens; units of s tokens: Var = p (1 - p) sum(s^2) / N^2.
  unit_id = first + rows * tokens.shape[1]  # [batch, length] unit index over the batch
  sizes = np.bincount(unit_id[candidates], minlength=tokens.size)
  n = candidates.sum()
  sigma = math.sqrt(0.15 * 0.85 * (sizes.astype(np.float64) ** 2).sum()) / n
  assert abs(selected.sum() / n - 0.15) < 5 * sigma, (selected.sum() / n, sigma)
  # 80 / 10 / 10 per unit.
  chosen = unit_first & selected
  units = chosen.sum()
  assert units > 5000
  changed = np.zeros(tokens.shape, np.int64)
  np.add.at(changed, (rows.repeat(tokens.shape[1], 1), first), inputs != tokens)
  for share, p in ((masked[chosen].mean(), 0.8), ((changed[chosen] == 0).mean(), 0.1)):
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / units), (share, p)

  # Each level's own units: multi-word units hold only capitalised non-stopwords
  # (entity) or content words (phrase); basic units are single words.
  word_count = np.bincount(unit_id[starts & candidates], minlength=tokens.size)
  multi_word = word_count[unit_id] > 1  # [batch, length]
  classes = ernie.piece_classes(tok)
  in_multi = starts & candidates & multi_word
  # A stopword with a suffix ('the' '##y1') is another word, not a stopword.
  single = np.concatenate([starts[:, 1:], np.ones_like(starts[:, :1])], axis=1)
  if stage == 'basic':
    assert not multi_word[candidates].any()
  else:
    assert in_multi.sum() > 1000
    assert not classes['stopword'][tokens[in_multi & single]].any()
  if stage == 'entity':
    assert classes['capital'][tokens[in_multi]].all()
  if stage == 'phrase':
    assert not classes['starts_punct'][tokens[in_multi]].any()
    assert not classes['starts_punct'][tokens[in_multi]].any()
  assert word_count.max() <= 4


def test_mixed_stage_level_proportions(tok):
  batch = _batch(batch_size=6000, length=32)
  weights = (0.5, 0.3, 0.2)
  first, level = ernie.make_units(_objective(ernie_level_weights=weights), tok, seed=1)(batch)
  counts = np.bincount(level, minlength=3)
  assert scipy.stats.chisquare(counts, np.array(weights) * len(level)).pvalue > 1e-4, counts
  # Each row has exactly the units of its level.
  for index, stage in enumerate(ernie.LEVELS):
    fixed, _ = ernie.make_units(_objective(ernie_stage=stage), tok, seed=1)(batch)
    np.testing.assert_array_equal(first[level == index], fixed[level == index])
  # The levels differ on these rows, so the comparison above means something.
  basic, _ = ernie.make_units(_objective(ernie_stage='basic'), tok, seed=1)(batch)
  assert (basic[level == 1] != first[level == 1]).mean() > 0.05


def test_supplied_spans_replace_the_chunker(tok):
  pieces = ['[CLS]', 'x1', 'x2', 'x3', 'x4', 'x5', '[SEP]', '[CLS]', 'x6', 'x7', '[SEP]']
  batch = _rows(_ids(pieces)[None])
  batch['segment_ids'][0, 7:] = 2
  # Unit starts at x1 and x4, and a "unit" across the segment change that must split.
  supplied = np.array([[0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]], bool)
  expected = np.array([[0, 1, 1, 1, 4, 4, 6, 7, 8, 8, 10]])
  for stage, key in (('entity', 'entity_starts'), ('phrase', 'phrase_starts')):
    first, _ = ernie.make_units(_objective(ernie_stage=stage), tok, seed=0)(
      {**batch, key: supplied}
    )
    np.testing.assert_array_equal(first, expected)
  # The basic level ignores them.
  first, _ = ernie.make_units(_objective(ernie_stage='basic'), tok, seed=0)(
    {**batch, 'entity_starts': supplied, 'phrase_starts': supplied}
  )
  np.testing.assert_array_equal(first, np.arange(len(pieces))[None])


def test_chinese_phrases_are_jieba_words(tok):
  text = '我们喜欢自然语言处理今天天气很好'
  batch = _rows(np.r_[PIECES.index('[CLS]'), tok.encode(text), PIECES.index('[SEP]')][None])
  basic, _ = ernie.make_units(_objective(ernie_stage='basic'), tok, seed=0)(batch)
  np.testing.assert_array_equal(basic[0], np.arange(len(text) + 2))  # Characters.
  cfg = _objective(ernie_stage='phrase', word_segmenter='jieba')
  phrase, _ = ernie.make_units(cfg, tok, seed=0)(batch)
  words = word_units.jieba_segmenter()(text)
  np.testing.assert_array_equal(
    phrase[0], _first_of([['[CLS]']] + [list(w) for w in words] + [['[SEP]']])
  )
  assert len(words) < len(text)


def test_determinism_and_batch_layout(tok):
  batch = _batch(batch_size=32)
  cfg = _objective()
  preprocess = ernie.make_preprocess(cfg, tok, seed=1)
  out = preprocess(batch)
  reference = mlm.make_preprocess(cfg, tok, seed=1)(batch)
  assert out.keys() == reference.keys()
  for key in out:
    assert out[key].dtype == reference[key].dtype and out[key].shape == reference[key].shape
  np.testing.assert_array_equal(out['targets'], batch['tokens'])
  order = np.random.default_rng(0).permutation(32)[:13]
  part = preprocess({k: v[order] for k, v in batch.items()})
  for key in ('inputs', 'weights'):
    np.testing.assert_array_equal(part[key], out[key][order])
  other = preprocess({**batch, 'epoch': batch['epoch'] + 1})
  assert (other['weights'] != out['weights']).any()


def test_config_errors(tok):
  with pytest.raises(ValueError, match='ernie_stage'):
    ernie.make_masker(_objective(ernie_stage='word'), tok, seed=0)
  with pytest.raises(ValueError, match='ernie_level_weights'):
    ernie.make_masker(_objective(ernie_level_weights=(0.0, 0.0, 0.0)), tok, seed=0)
  with pytest.raises(ValueError, match='max_unit_words'):
    ernie.make_masker(_objective(max_unit_words=0), tok, seed=0)
