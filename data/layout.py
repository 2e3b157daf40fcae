"""Documents with layout (LayoutLM, Xu et al. 2020): OCR'd pages whose words carry boxes.

OCR-JSON (`data.source='ocr_json'`, files from `data.text_files` / `eval_text_files`):
one page per line, UTF-8 JSON,

    {"width": 612, "height": 792,
     "words": [{"text": "Invoice", "box": [72, 40, 150, 58]}, ...]}

with each box [x0, y0, x1, y1] in the page's pixels (0 <= x0 <= x1 <= width, 0 <= y0 <=
y1 <= height), the words in reading order. A page becomes a `LaidOutText`: its words
joined by spaces, and each word's box scaled to LayoutLM's 0-1000 grid
(int(1000 * x / width), int(1000 * y / height)). The loader (data/loader.py) encodes it
word by word, every piece of a word taking the word's box, so the rows carry 'boxes'
[length, 4] next to their tokens through packing (framing and padding: a box of zeros).
A page without words is skipped; anything malformed is an error naming the file and line.
"""

from collections.abc import Sequence

import numpy as np

from data import jsonl, text_decoding

GRID = 1000  # LayoutLM's coordinates run 0..GRID (its 2-D tables have 1024 rows).


class LaidOutText(str):
  """A page's text (words joined by spaces) with `words` and `boxes` [words, 4] int32."""

  words: list[str]
  boxes: np.ndarray

  def __new__(cls, words: Sequence[str], boxes: np.ndarray):
    out = super().__new__(cls, ' '.join(words))
    out.words, out.boxes = list(words), np.asarray(boxes, np.int32)
    return out


def _page(where: str, record) -> LaidOutText | None:
  if not isinstance(record, dict) or not isinstance(record.get('words'), list):
    raise ValueError(f'{where}: an OCR page is {{"width", "height", "words": [...]}}.')
  width, height = record.get('width'), record.get('height')
  if not all(isinstance(v, int | float) and v > 0 for v in (width, height)):
    raise ValueError(f'{where}: width and height must be positive numbers, got {width}, {height}.')
  words, boxes = [], []
  for n, word in enumerate(record['words']):
    text = word.get('text') if isinstance(word, dict) else None
    box = word.get('box') if isinstance(word, dict) else None
    valid = isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)
    if valid:
      x0, y0, x1, y1 = box
      valid = 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    if not isinstance(text, str) or not valid:
      raise ValueError(
        f'{where}: word {n} must be {{"text": str, "box": [x0, y0, x1, y1]}} inside the '
        f'{width} x {height} page, got {str(word)[:80]}.'
      )
    if text.strip():
      words.append(' '.join(text.split()))  # One word's text never holds the separator.
      boxes.append([GRID * x0 / width, GRID * y0 / height, GRID * x1 / width, GRID * y1 / height])
  if not words:
    return None
  return LaidOutText(words, np.floor(np.array(boxes)).astype(np.int32))


def read_ocr_documents(paths: Sequence[str], on_decode_error: str = 'strict') -> list[str]:
  """The pages of OCR-JSON files, in file and line order (the format above)."""
  text_decoding.check_mode(on_decode_error)
  report = text_decoding.DecodeReport()
  pages = []
  for path in paths:
    for where, record in jsonl.jsonl_records(path, on_decode_error, report):
      page = _page(where, record)
      if page is not None:
        pages.append(page)
  report.log(len(paths))
  return pages


def encode_words(tokenizer, page: LaidOutText) -> tuple[np.ndarray, np.ndarray]:
  """(ids [n], boxes [n, 4]): each word encoded on its own, its pieces taking its box."""
  pieces = [tokenizer.encode(word) for word in page.words]
  counts = np.array([len(p) for p in pieces])
  ids = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)
  return ids, np.repeat(page.boxes, counts, axis=0)
