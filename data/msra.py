"""MSRA Chinese NER (the SIGHAN 2006 bakeoff's MSRA corpus, Levow 2006) from
ChineseNlpCorpus' `dh_msra.zip`, read from the zip itself (nothing is extracted to disk).

The zip holds one file, dh_msra.txt: one character per line, `char<TAB>tag`, the tags BIO
(IOB2) over PER, LOC and ORG; a blank line ends a sentence. Each character is a "word" of
data/conll.py's `Sentence`, so the tagging and MRC objectives and conlleval's chunk rules
(conll.entity_chunks) read it as they read CoNLL-2003, and entity F1 is over characters.

The file ships no split. It is the bakeoff's train set followed by its test set: the first
50,658 sentences hold the train set's entities as commonly cited (B- tags: PER 17,615, LOC
36,517, ORG 20,571) and 2,169,879 characters, the last 4,631 the test set's (PER 1,973, LOC
2,877, ORG 1,331) and 172,601 characters (Zhang and Yang 2018's table: 2169.9K, 172.6K);
sentence 50,658 (from 0), "中共中央致中国致公党十一大的贺词", opens the test set. The file's
lines are cut at 100 characters, hence more sentences than the bakeoff's 46.4K and 4.4K,
and 17 sentences that open inside an entity (an I- tag, which conlleval counts as a chunk).
Splits, by sentence index i in the file (0-based), fixed and dependent on order only:

  test   i >= TEST_START (50,658): the bakeoff's test set, 4,631 sentences.
  valid  i < TEST_START and i % VALID_EVERY == 0: every 10th train sentence, 5,066.
  train  the other i < TEST_START: 45,592 sentences.

(The shared copy: 55,289 sentences, 2,342,480 characters; 144 sentences are repeats of
short ones such as '今天', some on both sides of a split.) Valid shares documents with
train (neighbouring sentences), so it picks checkpoints; the score to compare with papers
is 'test'. A file longer than TEST_START with another sentence count is refused: the
boundary is the shared file's.

Long sentences are kept whole here; the objectives cut rows at seq_len and score the cut
characters as 'O' predictions (objectives/tagging.py). The shared file's longest sentence
is 100 characters, so with BERT's Chinese WordPiece (a piece per character) nothing is cut
at seq_len 128 (tagging: 102 tokens with [CLS] and [SEP]; MRC: the queries of
objectives/mrc_ner.MSRA_QUERIES leave room for 100 or more).
"""

import zipfile

from data.conll import Sentence

ZIP_NAME = 'dh_msra.zip'  # In data.clue_dir (../shared/data/zh/ChineseNlpCorpus).
MEMBER = 'dh_msra.txt'
# The tags the file uses, in the classifier order of configs/conll.py:msra.
TAGS = ('O', 'B-PER', 'I-PER', 'B-ORG', 'I-ORG', 'B-LOC', 'I-LOC')
SENTENCES = 55_289  # Sentences of the shared dh_msra.txt.
TEST_START = 50_658  # Index of the bakeoff test set's first sentence.
VALID_EVERY = 10  # valid: train-part sentences whose index is a multiple of this.
SPLITS = ('train', 'valid', 'test')


def read_msra(path: str) -> list[Sentence]:
  """Sentences of dh_msra.txt inside the zip at `path`, as (characters, tags), in file order.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: a zip without dh_msra.txt, bytes that are not UTF-8 (byte offset and line
      given), or a line that is not one character, a tab and one of TAGS (line number given).
  """
  with zipfile.ZipFile(path) as archive:
    if MEMBER not in archive.namelist():
      raise ValueError(f'{path}: holds {archive.namelist()[:5]}, not {MEMBER}.')
    raw = archive.read(MEMBER)
  where = f'{path}:{MEMBER}'
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    line = raw.count(b'\n', 0, e.start) + 1
    raise ValueError(
      f'{where}: byte offset {e.start} (line {line}) is not UTF-8 ({e.reason}): '
      f'{raw[e.start : e.start + 4]!r}.'
    ) from None
  known = set(TAGS)
  sentences, chars, tags = [], [], []
  for line_number, line in enumerate(text.split('\n'), 1):
    line = line.rstrip('\r')
    if not line.strip():
      if chars:
        sentences.append((chars, tags))
      chars, tags = [], []
      continue
    fields = line.split('\t')
    if len(fields) != 2 or len(fields[0]) != 1 or fields[0].isspace() or fields[1] not in known:
      raise ValueError(
        f'{where}:{line_number}: expected "character<TAB>tag" with one character and a tag '
        f'of {TAGS}, got {line[:80]!r}.'
      )
    chars.append(fields[0])
    tags.append(fields[1])
  if chars:  # The last sentence, when the file does not end with a blank line.
    sentences.append((chars, tags))
  return sentences


def split_indices(
  count: int, split: str, *, test_start: int = TEST_START, valid_every: int = VALID_EVERY
) -> list[int]:
  """The file indices of `split`'s sentences among `count` (see the module docstring).

  Raises:
    ValueError: an unknown split; a file longer than `test_start` whose count is not
      SENTENCES (the default boundary is the shared file's); an empty split.
  """
  if split not in SPLITS:
    raise ValueError(f'MSRA split {split!r}: use one of {SPLITS}.')
  if count > test_start and test_start == TEST_START and count != SENTENCES:
    raise ValueError(
      f'MSRA: {count} sentences, but the train/test boundary at sentence {TEST_START} is '
      f"that of ChineseNlpCorpus' dh_msra.txt ({SENTENCES} sentences): another file."
    )
  if split == 'test':
    indices = list(range(test_start, count))
  else:
    valid = split == 'valid'
    indices = [i for i in range(min(count, test_start)) if (i % valid_every == 0) == valid]
  if not indices:
    raise ValueError(
      f'MSRA split {split!r} is empty: {count} sentences, test from sentence {test_start}.'
    )
  return indices
