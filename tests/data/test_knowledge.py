"""K-BERT's sentence trees (data/knowledge.py): the knowledge file, entity matching, the
flattened tokens, soft positions and the visible matrix by hand, truncation, and rows
that equal the plain classification rows when no entity matches."""

import numpy as np
import pytest

from data import knowledge, tasks, tokenizers

# head, relation, tail; a two-word head, an entity with two triples, a CJK head.
TRIPLES = """# head\trelation\ttail
tim cook\tceo_of\tapple
beijing\tcapital_of\tchina

beijing\tis_a\tcity
北京\t首都\t中国
"""


class WordTokenizer:
  """One id per whitespace word (CJK ideographs one each), from a growing vocabulary."""

  cls_id, sep_id = 1, 2

  def __init__(self):
    self.ids = {}

  def encode(self, text: str) -> np.ndarray:
    words = knowledge.squad.context_words(text)[0]
    return np.array([self.ids.setdefault(w.lower(), 10 + len(self.ids)) for w in words])

  def word(self, token: int) -> str:
    return {1: '[CLS]', 2: '[SEP]', **{v: k for k, v in self.ids.items()}}[token]


@pytest.fixture
def graph(tmp_path):
  path = tmp_path / 'kg.tsv'
  path.write_text(TRIPLES, encoding='utf-8')
  return knowledge.read_triples(str(path))


def test_knowledge_file_and_entity_matching(graph, tmp_path):
  assert graph.triples == {
    ('tim', 'cook'): [('ceo of', 'apple')],
    ('beijing',): [('capital of', 'china'), ('is a', 'city')],
    ('北', '京'): [('首都', '中国')],
  }
  assert graph.longest == 2
  words = 'Tim Cook met tim in Beijing'.split()
  assert knowledge.match_entities(words, graph) == [(0, 2), (5, 6)]
  assert knowledge.match_entities(list('我在北京'), graph) == [(2, 4)]
  bad = tmp_path / 'bad.tsv'
  bad.write_text('a\tb\tc\nonly\ttwo\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'bad.tsv:2: a triple is head<TAB>relation<TAB>tail'):
    knowledge.read_triples(str(bad))


def test_tree_tokens_soft_positions_and_visible_matrix_by_hand(graph):
  tokenizer = WordTokenizer()
  row = knowledge.encode_pair(
    tokenizer, 'tim cook visits beijing now', None, 24, graph=graph, max_triples=2
  )
  n = int(row['segment_ids'].sum())
  words = [tokenizer.word(t) for t in row['tokens'][:n]]
  assert words == [
    '[CLS]', 'tim', 'cook', 'ceo', 'of', 'apple', 'visits', 'beijing', 'capital', 'of',
    'china', 'is', 'a', 'city', 'now', '[SEP]',
  ]  # fmt: skip
  # The trunk counts on as if no branch were there; each branch from its entity's end.
  assert row['positions'][:n].tolist() == [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 5, 6, 7, 5, 6]
  assert (row['tokens'][n:] == 0).all() and (row['token_types'] == 0).all()
  # By hand: the trunk, three branches and the trunk tokens each branch hangs from.
  trunk = {0, 1, 2, 6, 7, 14, 15}
  branches = {1: ({3, 4, 5}, {1, 2}), 2: ({8, 9, 10}, {7}), 3: ({11, 12, 13}, {7})}
  want = np.zeros((24, 24), bool)
  for i in range(n):
    for j in range(n):
      want[i, j] = (i in trunk and j in trunk) or any(
        (i in b and j in b) or (i in b and j in root) or (i in root and j in b)
        for b, root in branches.values()
      )
  np.testing.assert_array_equal(row['visible'], want)
  assert not row['visible'][3, 6] and not row['visible'][8, 11] and row['visible'][5, 1]


def test_pair_tree_truncates_the_longer_tree_and_types_the_second(graph):
  tokenizer = WordTokenizer()
  row = knowledge.encode_pair(
    tokenizer, 'go to beijing today please', 'beijing', 10, graph=graph, max_triples=1
  )
  # a: go to beijing capital of china today please (8); b: beijing capital of china (4);
  # room for 7: a loses four tokens from its end, to 4; then b loses one, to 3.
  words = [tokenizer.word(t) for t in row['tokens']]
  assert words == ['[CLS]', 'go', 'to', 'beijing', 'capital', '[SEP]', 'beijing', 'capital',
                   'of', '[SEP]']  # fmt: skip
  assert row['token_types'].tolist() == [0] * 6 + [1] * 4
  # The first [SEP] follows the trunk (beijing at 3), the second tree starts after it.
  assert row['positions'].tolist() == [0, 1, 2, 3, 4, 4, 5, 6, 7, 6]
  assert row['visible'][6, 7] and not row['visible'][4, 7] and not row['visible'][7, 9]


def test_without_a_match_the_row_is_classification_s(graph, spm_path):
  tokenizer = tokenizers.load_tokenizer(spm_path)
  a, b = 'the film was a story of people', 'and it was this plot'
  row = knowledge.encode_pair(tokenizer, a, b, 32, graph=graph, max_triples=2)
  plain = tasks.encode_pair(tokenizer, a, b, 32)
  for name in plain:
    np.testing.assert_array_equal(row[name], plain[name], err_msg=name)
  real = row['segment_ids'] > 0
  np.testing.assert_array_equal(row['visible'], real[:, None] & real[None, :])
