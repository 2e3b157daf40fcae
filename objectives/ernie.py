"""ERNIE 1.0's knowledge masking (Sun et al. 2019, "ERNIE: Enhanced Representation through
Knowledge Integration", section 3.2).

MLM (objectives/mlm.py) whose units are larger than tokens, at three levels:
  * basic: the basic language unit, a word for English and a character for
    Chinese: the words of data/word_units.py from the pieces (a Chinese
    WordPiece vocabulary has one piece per character, each its own word);
  * phrase: phrases are units, other words stay basic units;
  * entity: named entities are units, other words stay basic units.
A unit is selected with probability `mask_rate` (15%) and then wholly replaced by
[MASK] (80%), wholly by random tokens (10%) or wholly kept, drawn once per unit,
so every token is covered with probability `mask_rate` at every level.

Stages. The paper trains basic, then phrase, then entity masking in turn;
`objective.ernie_stage` picks one level ('basic', 'phrase', 'entity') or 'mixed',
which draws each row's level from (seed, epoch, example id) with relative weights
`ernie_level_weights` (basic, phrase, entity), so one run mixes the stages.

Where units come from.
  * Supplied spans: `batch['phrase_starts']` / `batch['entity_starts']`
    ([batch, length] bool, True where a unit begins; every unit start, a one-word
    unit included, must be marked) are taken as they are; special tokens and
    segment changes still split units. The loader makes them from JSONL
    annotations: `data.source='jsonl'`, `data.span_fields='entity_starts:entities,
    phrase_starts:phrases'`, each field a list of [start, end) character spans
    (data/sources.py, data/word_units.span_unit_starts). The paper's units
    come from lexical analysis, chunking and NER tools run over the corpus beforehand.
  * Otherwise a deterministic heuristic chunker over the pieces, for English:
    - entity: a maximal run of capitalised words that are not stopwords ("Python
      Software Foundation"); an uncased vocabulary has no capitals, so its
      entity level equals basic;
    - phrase: a maximal run of content words, cut at stopwords and punctuation
      (RAKE's candidate phrases, Rose et al. 2010); stopwords and punctuation are
      units of their own, and a word ending in punctuation ("word," in
      SentencePiece) ends its phrase;
    - both are cut into units of at most `max_unit_words` words.
    With `word_segmenter='jieba'` (Chinese), phrases are jieba's words over the
    characters, as the paper uses segmentation tools for Chinese.
The loss is MLM's (objectives/shared/token_lm.py).
"""

import unicodedata

import numpy as np
from ml_collections import config_dict

from data import host_random, word_units
from objectives import mlm
from objectives.shared import token_lm

FRAMING = mlm.FRAMING
SHOW = 'masked'
# The objective API's eval figures and loss: token_lm's.
eval_summary = token_lm.eval_summary
loss_fn = token_lm.loss_fn
# Only the masked positions reach the vocabulary (objectives/mlm.py).
predicted_length = mlm.predicted_length
build_model = mlm.build_model

LEVELS = ('basic', 'phrase', 'entity')
STAGES = (*LEVELS, 'mixed')
# Host random stream of the per-row level; objectives/mlm.py's masker uses 0, 1 and 2.
_LEVEL_STREAM = 3
# English function words: they split phrases and never join an entity.
STOPWORDS = frozenset(
  """a about above after again against all am an and any are as at be been before being below
  between both but by can could did do does doing down during each few for from further had has
  have having he her here hers him his how i if in into is it its itself just me more most my no
  nor not now of off on once only or other our ours out over own same she should so some such than
  that the their theirs them then there these they this those through to too under until up very
  was we were what when where which while who whom why will with would you your yours""".split()
)


def config() -> config_dict.ConfigDict:
  """ERNIE 1.0 knowledge masking's keys."""
  c = config_dict.ConfigDict()
  c.ernie_stage = 'mixed'  # 'basic', 'phrase', 'entity' or 'mixed' (units drawn per level).
  c.ernie_level_weights = (1.0, 1.0, 1.0)  # 'mixed': relative weights of basic, phrase, entity.
  c.max_unit_words = 4  # Longest heuristic phrase, in words.
  return c


def _is_punctuation(ch: str) -> bool:
  return unicodedata.category(ch)[0] in 'PS'


def piece_classes(tokenizer) -> dict[str, np.ndarray]:
  """[vocab] bool tables from each piece's text, its '▁' or '##' marker removed.

  Returns:
    {'capital': first character upper case, 'stopword': in STOPWORDS (any case),
    'starts_punct' / 'ends_punct': first / last character is punctuation or a
    symbol}; all False for special ids.
  """
  names = ('capital', 'stopword', 'starts_punct', 'ends_punct')
  classes = {name: np.zeros(tokenizer.vocab_size, bool) for name in names}
  for i in range(tokenizer.vocab_size):
    piece = tokenizer.id_to_piece(i)
    text = piece[1:] if piece.startswith('▁') else piece[2:] if piece.startswith('##') else piece
    if not text:
      continue
    classes['capital'][i] = text[0].isupper()
    classes['stopword'][i] = text.lower() in STOPWORDS
    classes['starts_punct'][i] = _is_punctuation(text[0])
    classes['ends_punct'][i] = _is_punctuation(text[-1])
  for table in classes.values():
    table[np.asarray(tokenizer.special_ids)] = False
  return classes


def _cap_words(unit_starts: np.ndarray, starts: np.ndarray, max_words: int) -> np.ndarray:
  """Splits units of more than `max_words` words (word `starts` [batch, length]) into pieces."""
  rows = np.arange(starts.shape[0])[:, None]
  count = np.cumsum(starts, axis=1)  # Words begun so far.
  within = count - count[rows, word_units.word_start_positions(unit_starts)]
  return unit_starts | (starts & (within % max_words == 0))


def chunk_starts(
  tokens: np.ndarray,
  segment_ids: np.ndarray,
  starts: np.ndarray,
  special_ids: np.ndarray,
  classes: dict,
  max_words: int,
) -> tuple[np.ndarray, np.ndarray]:
  """The heuristic chunker's (phrase starts, entity starts), each [batch, length] bool.

  Args:
    tokens, segment_ids: [batch, length] packed rows.
    starts: [batch, length] word starts from word_units.token_word_starts.
    special_ids: the tokenizer's special ids (never part of a phrase or entity).
    classes: `piece_classes` of the tokenizer.
    max_words: longest unit, in words.
  """
  rows = np.arange(tokens.shape[0])[:, None]
  ordinary = (segment_ids > 0) & ~np.isin(tokens, special_ids)
  # A word joins the previous word only when both are ordinary words of one segment.
  after_word = np.zeros_like(starts)
  after_word[:, 1:] = (
    ordinary[:, :-1] & ordinary[:, 1:] & (segment_ids[:, 1:] == segment_ids[:, :-1])
  )
  after_word &= starts
  previous_word = word_units.word_start_positions(starts)[:, np.r_[0, : starts.shape[1] - 1]]
  next_piece = np.concatenate([tokens[:, 1:], tokens[:, -1:]], axis=1)
  next_starts = np.concatenate([starts[:, 1:], np.ones_like(starts[:, :1])], axis=1)
  # A stopword: its first piece is one, and nothing but punctuation follows in the word.
  stopword = starts & classes['stopword'][tokens]
  stopword &= next_starts | classes['starts_punct'][next_piece]
  punctuation = starts & classes['starts_punct'][tokens]
  capital = starts & classes['capital'][tokens] & ~stopword
  content = starts & ~stopword & ~punctuation
  after_punct = np.zeros_like(starts)
  after_punct[:, 1:] = classes['ends_punct'][tokens[:, :-1]]

  entity_joins = after_word & capital & capital[rows, previous_word]
  phrase_joins = after_word & content & content[rows, previous_word] & ~after_punct
  return (
    _cap_words(starts & ~phrase_joins, starts, max_words),
    _cap_words(starts & ~entity_joins, starts, max_words),
  )


def make_units(objective_cfg, tokenizer, seed: int):
  """Returns `units(batch) -> (first, level)` for ERNIE's masking.

  `first` [batch, length] is the position of the first token of each token's
  unit; `level` [batch] the index in LEVELS of each row's level.
  """
  stage = objective_cfg.ernie_stage
  if stage not in STAGES:
    raise ValueError(f'objective.ernie_stage={stage!r} must be one of {STAGES}.')
  weights = np.asarray(objective_cfg.ernie_level_weights, np.float64)
  if weights.shape != (3,) or (weights < 0).any() or weights.sum() <= 0:
    raise ValueError(
      f'objective.ernie_level_weights={tuple(weights)} must be three weights >= 0 '
      '(basic, phrase, entity), not all 0.'
    )
  max_words = int(objective_cfg.max_unit_words)
  if max_words < 1:
    raise ValueError(f'objective.max_unit_words={max_words} must be >= 1.')
  segmenter = word_units.segmenter(objective_cfg)
  special_ids = np.asarray(tokenizer.special_ids)
  table = word_units.word_start_table(tokenizer)
  classes = piece_classes(tokenizer)
  thresholds = np.cumsum(weights / weights.sum())[:-1]

  def units(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
    batch_size, length = tokens.shape
    if stage == 'mixed':
      u = host_random.uniform(seed, batch['epoch'], batch['example_id'], 1, _LEVEL_STREAM)
      level = np.searchsorted(thresholds, u[:, 0], side='right')
    else:
      level = np.full(batch_size, LEVELS.index(stage))
    starts = word_units.token_word_starts(tokens, segment_ids, table, special_ids)
    boundaries = word_units.token_word_starts(
      tokens, segment_ids, np.zeros_like(table), special_ids
    )
    phrase, entity = chunk_starts(tokens, segment_ids, starts, special_ids, classes, max_words)
    if segmenter is not None and (level == 1).any():
      rows = np.flatnonzero(level == 1)  # jieba runs in Python: only on the rows that need it.
      phrase[rows] = word_units.chinese_starts_for_batch(
        tokens[rows], segment_ids[rows], starts[rows], tokenizer, segmenter
      )
    if 'phrase_starts' in batch:
      phrase = boundaries | np.asarray(batch['phrase_starts'], bool)
    if 'entity_starts' in batch:
      entity = boundaries | np.asarray(batch['entity_starts'], bool)
    chosen = np.stack([starts, phrase, entity])[level, np.arange(batch_size)]  # [batch, length]
    return word_units.word_start_positions(chosen), level

  return units


def make_masker(objective_cfg, tokenizer, seed: int):
  """Returns `mask(batch) -> (inputs, selected)`: MLM over ERNIE's units."""
  units = make_units(objective_cfg, tokenizer, seed)
  return mlm.make_masker(objective_cfg, tokenizer, seed, lambda batch: units(batch)[0])


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch` turning packed rows into ERNIE's MLM inputs."""
  mask = make_masker(objective_cfg, tokenizer, seed)

  def preprocess(batch: dict) -> dict:
    inputs, selected = mask(batch)
    return mlm.model_batch(objective_cfg, batch, inputs, selected)

  return preprocess
