"""K-BERT's knowledge injection (Liu et al. 2020): triples spliced into the sentence as a
tree, read by the encoder through soft positions and a visible matrix.

Knowledge file (UTF-8 text): one triple per line, `head<TAB>relation<TAB>tail`; blank
lines and lines starting with '#' are skipped; anything else is an error naming the line.
A head may be several words; it matches the text case-insensitively, word for word
(words as the SQuAD reader splits them, data/squad.context_words: whitespace-separated,
each CJK ideograph a word of its own, so a Chinese head matches character by character).
Underscores in a relation read as spaces (`capital_of` -> "capital of").

    # head      relation      tail
    paris       capital_of    france
    苹果         类别           水果

The sentence tree: scanning the words left to right, the longest head that starts at a
word is an entity; up to `max_triples` of its triples (file order) follow its tokens as
branches, each branch the tokens of "relation tail". The row is flattened in that order
([CLS] ... entity branch1 branch2 ... rest [SEP]). Soft positions: the trunk (the text,
[CLS] and [SEP]) counts on as if no branch were there, and each branch counts on from its
entity's last position (all branches of one entity share their positions). The visible
matrix: trunk tokens see the trunk; a branch's tokens see themselves and their entity's
tokens, which see them back; nothing else crosses.
"""

import dataclasses
import functools

import numpy as np

from data import atomic_files, squad, tasks


@dataclasses.dataclass(frozen=True)
class KnowledgeGraph:
  """Triples by head: lower-cased head words -> [(relation, tail)] in file order."""

  triples: dict[tuple[str, ...], list[tuple[str, str]]]

  @property
  def longest(self) -> int:
    """The most words in a head."""
    return max((len(head) for head in self.triples), default=0)


def words_of(text: str) -> tuple[str, ...]:
  """A name's lower-cased words, as heads and mentions are matched."""
  return tuple(w.lower() for w in squad.context_words(text)[0])


def tab_fields(path: str, count: int, what: str):
  """Yields the `count` tab-separated fields (stripped) of each line of the UTF-8 file at
  `path`, skipping blank lines and lines starting with '#'.

  Raises:
    ValueError: a line without exactly `count` non-empty fields, naming it and `what`
      (e.g. 'a triple is head<TAB>relation<TAB>tail').
  """
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      line = line.rstrip('\n')
      if not line.strip() or line.lstrip().startswith('#'):
        continue
      fields = [field.strip() for field in line.split('\t')]
      if len(fields) != count or not all(fields):
        raise ValueError(f'{path}:{number}: {what}, got {line!r}.')
      yield fields


def graph_of(triples) -> KnowledgeGraph:
  """The graph of (head, relation, tail) strings, in order (underscores in a relation read
  as spaces)."""
  by_head: dict[tuple[str, ...], list[tuple[str, str]]] = {}
  for head, relation, tail in triples:
    by_head.setdefault(words_of(head), []).append((relation.replace('_', ' '), tail))
  return KnowledgeGraph(by_head)


def read_triples(path: str) -> KnowledgeGraph:
  """The knowledge file at `path` (the format above).

  Raises:
    ValueError: a line that is not three non-empty tab-separated fields, with its number.
  """
  return graph_of(tab_fields(path, 3, 'a triple is head<TAB>relation<TAB>tail'))


def match_entities(words: list[str], graph: KnowledgeGraph) -> list[tuple[int, int]]:
  """[(first word, end word)) of the entities in `words`: left to right, the longest head
  starting at each word; matched words are not matched again."""
  lowered = [w.lower() for w in words]
  found, i = [], 0
  while i < len(words):
    for n in range(min(graph.longest, len(words) - i), 0, -1):
      if tuple(lowered[i : i + n]) in graph.triples:
        found.append((i, i + n))
        i += n
        break
    else:
      i += 1
  return found


@dataclasses.dataclass
class Tree:
  """A flattened sentence tree, one entry per token: its id, its position relative to the
  tree's first trunk token, whether it is on the trunk, its entity (0: none; numbered
  from `first_entity`) and, on a branch, its branch (0 on the trunk)."""

  tokens: list[int]
  positions: list[int]
  trunk: list[bool]
  entity: list[int]
  branch: list[int]
  heads: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # Entity's head.

  def append(self, token: int, position: int, trunk: bool, entity: int, branch: int) -> None:
    self.tokens.append(token)
    self.positions.append(position)
    self.trunk.append(trunk)
    self.entity.append(entity)
    self.branch.append(branch)

  def pop(self) -> None:
    for column in (self.tokens, self.positions, self.trunk, self.entity, self.branch):
      column.pop()

  def __len__(self) -> int:
    return len(self.tokens)

  def next_position(self) -> int:
    """Where the trunk goes on after this tree: one past its last trunk position."""
    trunk = [p for p, t in zip(self.positions, self.trunk, strict=True) if t]
    return max(trunk) + 1 if trunk else 0


def sentence_tree(
  tokenizer, text: str, graph: KnowledgeGraph, max_triples: int, first_entity: int = 1,
  first_branch: int = 1,
) -> Tree:  # fmt: skip
  """The tree of `text` with its entities' triples (the module doc), untruncated."""
  words = squad.context_words(text)[0]
  tree = Tree([], [], [], [], [])
  position, entity, branch, done = 0, first_entity, first_branch, 0

  def trunk(first: int, end: int, tag: int) -> None:
    nonlocal position
    if first < end:  # The words between two entities are encoded together.
      for token in tokenizer.encode(squad.join_words(words[first:end])).tolist():
        tree.append(token, position, True, tag, 0)
        position += 1

  for start, end in match_entities(words, graph):
    trunk(done, start, 0)
    trunk(start, end, entity)
    head = tuple(w.lower() for w in words[start:end])
    tree.heads[entity] = head
    for relation, tail in graph.triples[head][:max_triples]:
      for offset, token in enumerate(tokenizer.encode(f'{relation} {tail}').tolist()):
        tree.append(token, position + offset, False, entity, branch)
      branch += 1
    entity, done = entity + 1, end
  trunk(done, len(words), 0)
  return tree


def visible_matrix(trunk: np.ndarray, entity: np.ndarray, branch: np.ndarray) -> np.ndarray:
  """[n, n] bool from [n] arrays: the trunk sees the trunk, a branch sees itself and its
  entity's trunk tokens (and they it)."""
  on_trunk = trunk[:, None] & trunk[None, :]
  same_branch = ~trunk[:, None] & ~trunk[None, :] & (branch[:, None] == branch[None, :])
  across = (trunk[:, None] != trunk[None, :]) & (entity[:, None] == entity[None, :])
  return on_trunk | same_branch | (across & (entity[:, None] > 0))


def _pair_tree(tokenizer, text_a, text_b, seq_len, graph, max_triples) -> tuple[Tree, list]:
  """([CLS] tree(a) [SEP] (tree(b) [SEP]) as one tree, its token types), truncated to
  `seq_len` by BERT's rule over the trees (the last token of the longer one goes)."""
  a = sentence_tree(tokenizer, text_a, graph, max_triples)
  trees = [a]
  if text_b is not None:
    trees.append(
      sentence_tree(
        tokenizer,
        text_b,
        graph,
        max_triples,
        1 + max(a.entity, default=0),
        1 + max(a.branch, default=0),
      )  # fmt: skip
    )
  budget = seq_len - (1 + len(trees))
  while sum(map(len, trees)) > budget:
    longer = trees[0] if len(trees) == 1 or len(trees[0]) > len(trees[1]) else trees[1]
    longer.pop()
  row = Tree([tokenizer.cls_id], [0], [True], [0], [0])
  types = [0]
  for kind, tree in enumerate(trees):
    start = row.next_position()
    for column, values in zip(
      (row.tokens, row.positions, row.trunk, row.entity, row.branch),
      (tree.tokens, [start + p for p in tree.positions], tree.trunk, tree.entity, tree.branch),
      strict=True,
    ):
      column.extend(values)
    row.heads.update(tree.heads)
    row.append(tokenizer.sep_id, start + tree.next_position(), True, 0, 0)
    types += [kind] * (len(tree) + 1)
  return row, types


def encode_pair(
  tokenizer, text_a: str, text_b: str | None, seq_len: int, *, graph: KnowledgeGraph,
  max_triples: int,
) -> dict:  # fmt: skip
  """[CLS] tree(a) [SEP] (tree(b) [SEP]) padded to `seq_len`: data/tasks.encode_pair's
  row with soft positions, plus 'visible' [seq_len, seq_len] bool (False on padding).
  Over budget, BERT's rule drops the last token of the longer tree (branch or trunk)."""
  row, types = _pair_tree(tokenizer, text_a, text_b, seq_len, graph, max_triples)
  out = tasks.padded_row(row.tokens, types, seq_len)
  n = len(row)
  out['positions'][:n] = row.positions
  out['visible'] = np.zeros((seq_len, seq_len), bool)
  out['visible'][:n, :n] = visible_matrix(
    np.array(row.trunk), np.array(row.entity), np.array(row.branch)
  )
  return out


def entity_ids(graph: KnowledgeGraph) -> tuple[list, list, np.ndarray]:
  """(entities, relations, triples): every head and tail as lower-cased words (heads first,
  in file order), every relation, and the triples as [n, 3] (head, relation, tail) ids:
  the vocabulary of a knowledge embedding (objectives/shared/transe.py, tools/transe.py)."""
  entities: dict[tuple[str, ...], int] = {}
  relations: dict[str, int] = {}
  for head in graph.triples:
    entities.setdefault(head, len(entities))
  rows = []
  for head, pairs in graph.triples.items():
    for relation, tail in pairs:
      tail_id = entities.setdefault(words_of(tail), len(entities))
      rows.append((entities[head], relations.setdefault(relation, len(relations)), tail_id))
  return list(entities), list(relations), np.array(rows, np.int64).reshape(-1, 3)


@dataclasses.dataclass(frozen=True)
class EntityVectors:
  """Entity embeddings by name (tools/transe.py's file): `graph` matches the names in text
  (no triples to splice), `vectors` [entities, dim] float32, row i of entity `names[i]`."""

  names: list[tuple[str, ...]]
  vectors: np.ndarray

  @functools.cached_property
  def graph(self) -> KnowledgeGraph:
    return KnowledgeGraph({name: [] for name in self.names})

  @functools.cached_property
  def row_of(self) -> dict[tuple[str, ...], int]:
    return {name: i for i, name in enumerate(self.names)}


def write_entity_vectors(path: str, names, vectors, relations, relation_vectors) -> None:
  """An .npz of entity (and relation) vectors by name, written atomically."""
  arrays = {
    'entities': np.array([squad.join_words(n) for n in names]),
    'entity_vectors': np.asarray(vectors, np.float32),
    'relations': np.array(relations),
    'relation_vectors': np.asarray(relation_vectors, np.float32),
  }
  atomic_files.write_npz(path, arrays)


def read_entity_vectors(path: str) -> EntityVectors:
  with np.load(path) as f:
    return EntityVectors([words_of(str(n)) for n in f['entities']], f['entity_vectors'])


def encode_entities(
  tokenizer, text_a: str, text_b: str | None, seq_len: int, *, entities: EntityVectors
) -> dict:
  """ERNIE-THU's row: data/tasks.encode_pair's arrays (the entity mentions encoded on their
  own, as K-BERT's trunk), plus 'entity_vectors' [seq_len, dim] float32, each mention's
  entity vector at its first token (ERNIE aligns an entity to its mention's first token),
  zeros elsewhere, and 'entity_mask' [seq_len] bool, True there."""
  row, types = _pair_tree(tokenizer, text_a, text_b, seq_len, entities.graph, 0)
  out = tasks.padded_row(row.tokens, types, seq_len)
  tags = np.array(row.entity)
  first = (tags > 0) & (tags != np.r_[0, tags[:-1]])  # A mention's first token.
  out['entity_mask'] = np.zeros(seq_len, bool)
  out['entity_mask'][: len(tags)] = first
  out['entity_vectors'] = np.zeros((seq_len, entities.vectors.shape[1]), np.float32)
  for i in np.flatnonzero(first):
    out['entity_vectors'][i] = entities.vectors[entities.row_of[row.heads[int(tags[i])]]]
  return out
