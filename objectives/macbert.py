"""MacBERT's MLM as correction (Cui et al. 2020, "Revisiting Pre-trained Models for Chinese NLP").

Selection. Whole-word n-grams: 15% of the input words are selected, in n-grams of
1 to 4 words with probabilities 0.4 / 0.3 / 0.2 / 0.1 (`ngram_probs`). Each run of
ordinary words (between special tokens, within a segment) is cut into consecutive
chunks whose lengths are drawn i.i.d. from `ngram_probs` (the last chunk of a run
is cut short by the run's end), and each chunk is selected with probability
`mask_rate`. So every word is covered with probability `mask_rate` (the paper
counts words), the selected n-grams have the paper's length distribution, and
the work is a cumulative sum, not a sequential budgeted loop. Adjacent selected
n-grams may touch, as in the reference n-gram maskers.

Replacement, drawn once per n-gram with MLM's masker (objectives/mlm.py):
`mask_token_rate` (80%) of the selected n-grams have each word replaced by a
SIMILAR word (no [MASK] token ever appears), `random_token_rate` (10%) by random
pieces, and the rest are kept. The loss is MLM's over every selected token.

Similar words keep the word's piece count (MacBERT replaces a word by a
same-length similar word): a candidate whose pieces number differently is
dropped when the table is built, and a word with no candidate left (or not in
the table at all) is replaced by random pieces, BERT's random tokens, one per
piece, as the paper falls back to a random word. Candidates come from
  * `synonyms_path`: a UTF-8 text file, one line per word, `word<TAB>syn1 syn2 ...`
    (synonyms separated by spaces; blank lines and lines starting with '#' are
    skipped; a word listed twice gets both lists). The table is directed.
  * otherwise `embeddings_path`, by cosine similarity (excluding the word itself),
    keeping the `num_neighbours` nearest of the same piece count:
      - `.npy`: a float array [vocab_size, dim] over the tokenizer's pieces; the
        words are then the single-piece words (pieces that start a word).
      - any other name: a word-vector text file (word2vec / GloVe / fastText
        text format: `word v1 ... vdim` per line, an optional `count dim` header);
        only the first `embeddings_max_words` words are read (such files are sorted
        by frequency), since the neighbour search is quadratic in the word count.
  * neither: every similar-word replacement falls back to random pieces (logged).
A word with several candidates takes one uniformly at random. The words of the
batch are found in the table with a trie walked one piece depth at a time over
the whole batch, so lookups are exact and vectorized.

Words come from the pieces as in whole-word masking (data/word_units.py),
`objective.word_segmenter='jieba'` segments Chinese, and `batch['word_starts']`,
when the loader supplies it, replaces the pieces' starts. MacBERT's other change,
sentence-order prediction, is not part of this objective.
"""

import functools

import numpy as np
from absl import logging
from ml_collections import config_dict

from data import host_random, word_units
from objectives import mlm
from objectives.shared import token_lm

FRAMING = mlm.FRAMING
# tools.show renders a similar-word replacement as a random one ({replacement→original}).
SHOW = 'masked'
# The objective API's eval figures and loss: token_lm's.
eval_summary = token_lm.eval_summary
loss_fn = token_lm.loss_fn
# Only the masked positions reach the vocabulary (objectives/mlm.py).
predicted_length = mlm.predicted_length
build_model = mlm.build_model

# Host random streams; objectives/mlm.py's masker uses 0, 1 and 2.
_NGRAM_STREAM, _CHOICE_STREAM, _FALLBACK_STREAM = 3, 4, 5


def config() -> config_dict.ConfigDict:
  """MacBERT's keys."""
  c = config_dict.ConfigDict()
  c.ngram_probs = (0.4, 0.3, 0.2, 0.1)  # Probabilities of masking 1-, 2-, 3-, 4-grams.
  c.synonyms_path = ''  # Synonym table (word<TAB>synonyms); empty: none.
  c.embeddings_path = ''  # Word vectors (.npy or text) for cosine-neighbour synonyms.
  c.num_neighbours = 1  # Nearest words by cosine taken as similar words.
  c.embeddings_max_words = 50_000  # Words read from embeddings_path.
  return c


def word_layout(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The words of each row, compacted to word indices.

  Args:
    starts: [batch, length] bool, True where a word (or special token) begins;
      position 0 always begins one.

  Returns:
    word_pos: [batch, length] position of word w's first token (for w < words in the row).
    word_len: [batch, length] tokens in word w (0 past the row's last word).
    word_index: [batch, length] index of each position's word.
  """
  length = starts.shape[1]
  # A stable sort of the flags puts each row's start positions first, in order.
  word_pos = np.argsort(~starts, axis=1, kind='stable')
  count = starts.sum(1, keepdims=True)
  w = np.arange(length)[None]
  next_pos = np.concatenate([word_pos[:, 1:], np.full_like(word_pos[:, :1], length)], axis=1)
  next_pos = np.where(w + 1 < count, next_pos, length)
  word_len = np.where(w < count, next_pos - word_pos, 0)
  return word_pos, word_len, np.cumsum(starts, axis=1) - 1


def ngram_lengths(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
  """n-gram lengths 1..len(probs) from uniforms `u` (same shape), P(n) = probs[n - 1]."""
  return 1 + np.searchsorted(np.cumsum(probs)[:-1], u, side='right')


def ngram_first_words(
  word_candidate: np.ndarray, word_segment: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
  """Cuts each run of candidate words into n-grams of the given lengths.

  Args:
    word_candidate: [batch, words] bool, the word can be masked (not special, not padding).
    word_segment: [batch, words] segment id of each word; a run never crosses one.
    lengths: [batch, words] n-gram lengths; the j-th n-gram of a run starting at
      word s takes `lengths[s + j]`, so every draw is used at most once.

  Returns:
    [batch, words] index of the first word of each word's n-gram; a word that is
    not a candidate is an n-gram of its own.
  """
  batch, words = word_candidate.shape
  rows = np.arange(batch)[:, None]
  continues = np.zeros_like(word_candidate)
  continues[:, 1:] = word_candidate[:, :-1] & (word_segment[:, 1:] == word_segment[:, :-1])
  run_first = word_units.word_start_positions(word_candidate & ~continues)  # [batch, words]
  offsets = np.cumsum(lengths, axis=1) - lengths  # Exclusive prefix sums.
  # The j-th n-gram of the run starting at s begins s + (lengths[s] + ... + lengths[s + j - 1]).
  target = run_first + offsets - offsets[rows, run_first]
  clipped = np.minimum(target, words - 1)
  inside = word_candidate & (target < words) & word_candidate[rows, clipped]
  inside &= run_first[rows, clipped] == run_first
  gram_start = ~word_candidate
  gram_start[np.nonzero(inside)[0], clipped[inside]] = True
  return word_units.word_start_positions(gram_start)


class SimilarWords:
  """A table word (piece ids) -> same-piece-count similar words, looked up over whole batches.

  Attributes:
    num_words: words with at least one candidate.
    max_pieces: pieces of the longest such word.
  """

  def __init__(self, table: dict[tuple[int, ...], list[tuple[int, ...]]], vocab_size: int):
    """`table` maps a word's pieces to its candidates' pieces (all of its length)."""
    words = [w for w, cands in table.items() if cands and w]
    self.num_words = len(words)
    self.max_pieces = max((len(w) for w in words), default=0)
    self._vocab_size = vocab_size
    # Trie over piece ids: edge (node, piece) -> child, as sorted keys node * vocab + piece.
    children, word_of_node = {}, [-1]
    for index, word in enumerate(words):
      node = 0
      for piece in word:
        node = children.setdefault((node, piece), len(word_of_node))
        if node == len(word_of_node):
          word_of_node.append(-1)
      word_of_node[node] = index
    keys = np.array([n * vocab_size + p for n, p in children], np.int64)
    order = np.argsort(keys)
    self._edge_keys = keys[order]
    self._edge_child = np.array(list(children.values()), np.int64)[order]
    self._word_of_node = np.array(word_of_node, np.int64)
    counts = np.array([len(table[w]) for w in words], np.int64)
    self._first_candidate = np.cumsum(counts) - counts
    self._num_candidates = counts
    # [candidates, max_pieces], -1 past a candidate's last piece.
    self._candidates = np.full((max(int(counts.sum()), 1), max(self.max_pieces, 1)), -1, np.int32)
    flat = [c for w in words for c in table[w]]
    for i, cand in enumerate(flat):
      self._candidates[i, : len(cand)] = cand

  def lookup(self, tokens: np.ndarray, word_pos: np.ndarray, word_len: np.ndarray) -> np.ndarray:
    """[batch, words] table index of each word of the rows, -1 where absent.

    Args:
      tokens: [batch, length] piece ids.
      word_pos, word_len: [batch, words] from `word_layout`.
    """
    rows = np.arange(tokens.shape[0])[:, None]
    node = np.zeros(word_pos.shape, np.int64)
    if not self.num_words:
      return node - 1
    for depth in range(self.max_pieces):
      piece = tokens[rows, np.minimum(word_pos + depth, tokens.shape[1] - 1)]
      key = node * self._vocab_size + piece  # Negative (never a key) once a walk has failed.
      at = np.minimum(np.searchsorted(self._edge_keys, key), len(self._edge_keys) - 1)
      child = np.where(self._edge_keys[at] == key, self._edge_child[at], -1)
      node = np.where(word_len > depth, child, node)
    found = (node >= 0) & (word_len >= 1) & (word_len <= self.max_pieces)
    return np.where(found, self._word_of_node[np.maximum(node, 0)], -1)

  def choose(self, index: np.ndarray, u: np.ndarray) -> np.ndarray:
    """[..., max_pieces] pieces of a candidate drawn by `u` for table indices `index` (>= 0)."""
    count = self._num_candidates[index]
    pick = np.minimum((u * count).astype(np.int64), count - 1)
    return self._candidates[self._first_candidate[index] + pick]


def _encode_words(tokenizer, words: list[str]) -> list[tuple[int, ...] | None]:
  """Each word's piece ids, None where it is empty or holds a special id ([UNK] included)."""
  special = set(int(i) for i in tokenizer.special_ids)
  out = []
  for word in words:
    ids = tuple(int(i) for i in tokenizer.encode(word))
    out.append(ids if ids and not special.intersection(ids) else None)
  return out


def read_synonyms(path: str, tokenizer) -> dict[tuple[int, ...], list[tuple[int, ...]]]:
  """The synonym file as word pieces -> candidate pieces of the same piece count."""
  words, synonyms = [], []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      line = line.rstrip('\n')
      if not line.strip() or line.startswith('#'):
        continue
      if '\t' not in line:
        raise ValueError(f'{path}:{number}: expected "word<TAB>synonym synonym ...", got {line!r}.')
      word, rest = line.split('\t', 1)
      words.append(word.strip())
      synonyms.append(rest.split())
  table: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
  encoded_words = _encode_words(tokenizer, words)
  for word, cands in zip(encoded_words, synonyms, strict=True):
    if word is None:
      continue
    kept = table.setdefault(word, [])
    for cand in _encode_words(tokenizer, cands):
      if cand is not None and len(cand) == len(word) and cand != word and cand not in kept:
        kept.append(cand)
  return table


def _read_word_vectors(path: str, max_words: int) -> tuple[list[str], np.ndarray]:
  words, vectors = [], []
  with open(path, encoding='utf-8', errors='replace') as f:
    for number, line in enumerate(f, 1):
      fields = line.rstrip().split(' ')
      if number == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
        continue  # word2vec's "count dim" header.
      if len(words) >= max_words:
        break
      if len(fields) < 2:
        raise ValueError(f'{path}:{number}: expected "word v1 ... vdim", got {line[:80]!r}.')
      if vectors and len(fields) - 1 != len(vectors[0]):
        raise ValueError(
          f'{path}:{number}: {len(fields) - 1} values where earlier lines have {len(vectors[0])}.'
        )
      words.append(fields[0])
      vectors.append(np.asarray(fields[1:], np.float32))
  if not words:
    raise ValueError(f'objective.embeddings_path={path} holds no word vectors.')
  return words, np.stack(vectors)


def nearest_neighbours(vectors: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
  """[n, min(k, n - 1)] indices of each row's most cosine-similar other rows, nearest first."""
  n = len(vectors)
  k = min(k, n - 1)
  unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
  out = np.zeros((n, max(k, 0)), np.int64)
  for lo in range(0, n if k > 0 else 0, block):
    sims = unit[lo : lo + block] @ unit.T  # [block, n]
    sims[np.arange(len(sims)), lo + np.arange(len(sims))] = -np.inf  # Never the word itself.
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind='stable')
    out[lo : lo + block] = np.take_along_axis(top, order, axis=1)
  return out


def read_embeddings(path: str, tokenizer, k: int, max_words: int) -> dict:
  """Word pieces -> its `k` nearest same-piece-count words by cosine similarity."""
  if path.endswith('.npy'):
    vectors = np.load(path)
    if vectors.ndim != 2 or vectors.shape[0] != tokenizer.vocab_size:
      raise ValueError(
        f'objective.embeddings_path={path} has shape {vectors.shape}; expected '
        f"[vocab_size={tokenizer.vocab_size}, dim] over the tokenizer's pieces."
      )
    single = word_units.word_start_table(tokenizer)
    single[np.asarray(tokenizer.special_ids)] = False
    ids = np.flatnonzero(single)
    pieces, vectors = [(int(i),) for i in ids], vectors[ids].astype(np.float32)
  else:
    words, vectors = _read_word_vectors(path, max_words)
    encoded = _encode_words(tokenizer, words)
    # One vector per piece sequence: the first (most frequent) surface form wins.
    first = {}
    for i, word in enumerate(encoded):
      if word is not None:
        first.setdefault(word, i)
    pieces, vectors = list(first), vectors[list(first.values())]
  table = {}
  lengths = np.array([len(p) for p in pieces])
  for n in np.unique(lengths):
    group = np.flatnonzero(lengths == n)
    neighbours = nearest_neighbours(vectors[group], k)
    for i, near in zip(group, neighbours, strict=True):
      table[pieces[i]] = [pieces[group[j]] for j in near]
  return table


@functools.lru_cache(maxsize=4)
def similar_words(objective_cfg_items: tuple, tokenizer) -> SimilarWords:
  """The run's similar-word table, built once per tokenizer (train and eval loaders share it)."""
  cfg = dict(objective_cfg_items)
  synonyms_path, embeddings_path = cfg['synonyms_path'], cfg['embeddings_path']
  if synonyms_path and embeddings_path:
    raise ValueError(
      f'objective.synonyms_path={synonyms_path!r} and embeddings_path={embeddings_path!r} are '
      'both set; MacBERT takes similar words from one of them: clear the other.'
    )
  if synonyms_path:
    table = read_synonyms(synonyms_path, tokenizer)
  elif embeddings_path:
    k = int(cfg['num_neighbours'])
    if k < 1:
      raise ValueError(f'objective.num_neighbours={k} must be >= 1.')
    max_words = int(cfg['embeddings_max_words'])
    table = read_embeddings(embeddings_path, tokenizer, k, max_words)
  else:
    logging.warning(
      'MacBERT: objective.synonyms_path and objective.embeddings_path are both empty, so no word '
      'has a similar word: the 80% similar-word replacements fall back to random words.'
    )
    table = {}
  similar = SimilarWords(table, tokenizer.vocab_size)
  if synonyms_path or embeddings_path:
    logging.info(
      'MacBERT: %d words have similar words (longest %d pieces) from %s.',
      similar.num_words,
      similar.max_pieces,
      synonyms_path or embeddings_path,
    )
  return similar


def make_ngrams(objective_cfg, tokenizer, seed: int):
  """Returns `ngrams(batch) -> (first, (word_pos, word_len, word_index))`.

  `first` [batch, length] is the position of the first token of each token's
  n-gram (a special token or padding is an n-gram of its own); the second item is
  `word_layout` of the row's words.
  """
  probs = np.asarray(objective_cfg.ngram_probs, np.float64)
  if probs.ndim != 1 or (probs < 0).any() or abs(probs.sum() - 1.0) > 1e-6:
    raise ValueError(
      f'objective.ngram_probs={tuple(probs)} must be probabilities of n = 1, 2, ... summing to 1.'
    )
  word_starts = word_units.make_word_starts(objective_cfg, tokenizer)
  special_ids = np.asarray(tokenizer.special_ids)

  def ngrams(batch: dict):
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
    rows = np.arange(tokens.shape[0])[:, None]
    layout = word_layout(word_starts(batch))
    word_pos, word_len, word_index = layout  # [batch, length] each
    candidate = (segment_ids > 0) & ~np.isin(tokens, special_ids)
    word_candidate = (word_len > 0) & candidate[rows, word_pos]
    u = host_random.uniform(
      seed, batch['epoch'], batch['example_id'], tokens.shape[1], _NGRAM_STREAM
    )
    lengths = ngram_lengths(u, probs)  # [batch, words], indexed by word.
    gram_first = ngram_first_words(word_candidate, segment_ids[rows, word_pos], lengths)
    return word_pos[rows, gram_first[rows, word_index]], layout

  return ngrams


def make_masker(objective_cfg, tokenizer, seed: int):
  """Returns `mask(batch) -> (inputs, selected)`: MacBERT's corruption of packed rows.

  `selected` [batch, length] marks every token of the selected n-grams; in
  `inputs` their words are replaced by similar words, random pieces or kept.
  """
  keys = ('synonyms_path', 'embeddings_path', 'num_neighbours', 'embeddings_max_words')
  given = tuple((k, objective_cfg[k]) for k in keys)
  similar = similar_words(given, tokenizer)
  ngrams = make_ngrams(objective_cfg, tokenizer, seed)
  replacement_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), tokenizer.special_ids)
  # MLM's masker draws selection and action once per n-gram, at its first token.
  mlm_mask = mlm.make_masker(objective_cfg, tokenizer, seed, lambda batch: batch['ngram_first'])

  def mask(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    tokens = batch['tokens']  # [batch, length]
    length = tokens.shape[1]
    rows = np.arange(tokens.shape[0])[:, None]
    draw = lambda stream: host_random.uniform(  # noqa: E731
      seed, batch['epoch'], batch['example_id'], length, stream
    )
    first, (word_pos, word_len, word_index) = ngrams(batch)
    inputs, selected = mlm_mask({**batch, 'ngram_first': first})
    # MLM's [MASK] choice is MacBERT's similar-word choice; each word is looked up on its own.
    to_similar = selected & (inputs == tokenizer.mask_id)
    pick = (draw(_FALLBACK_STREAM) * len(replacement_ids)).astype(np.int64)
    replacement = replacement_ids[np.minimum(pick, len(replacement_ids) - 1)]
    if similar.num_words:
      first_of_word = word_pos[rows, word_index]  # [batch, length]
      entry = similar.lookup(tokens, word_pos, word_len)[rows, word_index]  # -1: no similar word
      u = draw(_CHOICE_STREAM)[rows, first_of_word]  # One draw per word.
      pieces = similar.choose(np.maximum(entry, 0), u)  # [batch, length, max_pieces]
      offset = np.minimum(np.arange(length)[None] - first_of_word, pieces.shape[-1] - 1)
      similar_ids = np.take_along_axis(pieces, offset[..., None], axis=-1)[..., 0]
      replacement = np.where(entry >= 0, similar_ids, replacement)
    return np.where(to_similar, replacement, inputs), selected

  return mask


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch` turning packed rows into MacBERT's MLM inputs."""
  mask = make_masker(objective_cfg, tokenizer, seed)

  def preprocess(batch: dict) -> dict:
    inputs, selected = mask(batch)
    return mlm.model_batch(objective_cfg, batch, inputs, selected)

  return preprocess
