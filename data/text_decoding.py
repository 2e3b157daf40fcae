"""Reading UTF-8 text files, with errors that name the file and the byte.

Python's own error for a bad byte in a text file ("'utf-8' codec can't decode byte
0xff in position 8191: invalid start byte") names neither the file nor where in the
file the byte is: the position counts from the start of the decoder's current chunk.
Behind a glob of a thousand files that leaves a user bisecting. `data.on_decode_error`
picks what happens instead:

- 'strict' (the default): a ValueError naming the file, the byte offset in the file,
  the line, the bad bytes and the way out. Nothing is skipped silently.
- 'replace': every byte that is not part of valid UTF-8 reads as one U+FFFD, and the
  files and bytes replaced are counted in a `DecodeReport`, which the reader logs, so
  a corpus with a few stray bytes trains while the log says how much was replaced.

Text is read through the ordinary text streams (universal newlines, csv, json.load
behave as with `open`); the byte offset is found only when a file fails, by one more
pass over that file's bytes.
"""

import codecs
import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator

MODES = ('strict', 'replace')  # The values of data.on_decode_error.
REPLACEMENT = '\ufffd'

# 'surrogateescape' reads each undecodable byte 0xXY as the lone surrogate U+DCXY: no
# valid UTF-8 decodes to one, so counting them counts the bad bytes exactly.
_ESCAPED = re.compile('[\udc80-\udcff]')
_TO_REPLACEMENT = {code: REPLACEMENT for code in range(0xDC80, 0xDD00)}
_SCAN_CHUNK = 1 << 20
_REPORTED_FILES = 5  # Files named in the replace summary; the rest are counted.

_log = logging.getLogger(__name__)


def check_mode(mode: str):
  if mode not in MODES:
    raise ValueError(f'data.on_decode_error={mode!r} must be one of {MODES}.')


@dataclasses.dataclass
class DecodeReport:
  """Bytes replaced by U+FFFD per file, under data.on_decode_error='replace'."""

  replaced: dict[str, int] = dataclasses.field(default_factory=dict)  # path -> bytes

  def add(self, path: str, count: int):
    self.replaced[path] = self.replaced.get(path, 0) + count

  @property
  def bytes_replaced(self) -> int:
    return sum(self.replaced.values())

  def summary(self, files_read: int) -> str:
    """One line: how many bytes in how many of the files read, the first few named."""
    named = ', '.join(f'{p} ({n})' for p, n in list(self.replaced.items())[:_REPORTED_FILES])
    more = len(self.replaced) - _REPORTED_FILES
    return (
      f'data.on_decode_error=replace: {self.bytes_replaced} invalid UTF-8 byte(s) read as '
      f'U+FFFD in {len(self.replaced)} of {files_read} file(s): {named}'
      + (f' and {more} more' if more > 0 else '')
      + '.'
    )

  def log(self, files_read: int):
    """A warning with the summary, when anything was replaced."""
    if self.replaced:
      _log.warning('%s', self.summary(files_read))


def first_invalid_byte(path: str) -> tuple[int, int, str, bytes] | None:
  """Where the bytes of `path` stop being UTF-8: (byte offset, line number from 1, the
  decoder's reason, the offending bytes), or None when the whole file is valid UTF-8."""
  decoder = codecs.getincrementaldecoder('utf-8')()
  fed, lines_before = 0, 0
  with open(path, 'rb') as f:
    while True:
      chunk = f.read(_SCAN_CHUNK)
      pending = decoder.getstate()[0]  # An unfinished character's bytes: never a newline.
      try:
        decoder.decode(chunk, final=not chunk)
      except UnicodeDecodeError as e:
        line = lines_before + e.object[: e.start].count(b'\n') + 1
        return fed - len(pending) + e.start, line, e.reason, bytes(e.object[e.start : e.end])
      if not chunk:
        return None
      fed += len(chunk)
      lines_before += chunk.count(b'\n')


_REPLACE_HINT = (
  'set data.on_decode_error=replace to read such bytes as U+FFFD (counted in the log), or '
  'convert the file to UTF-8 (iconv -f <its encoding> -t utf-8)'
)
_CONVERT_HINT = 'the file must be UTF-8: convert it (iconv -f <its encoding> -t utf-8)'


def _named_error(path: str, hint: str) -> ValueError | None:
  """The error naming `path`'s first invalid byte; None if its bytes are all UTF-8."""
  where = first_invalid_byte(path)
  if where is None:
    return None
  offset, line, reason, bad = where
  return ValueError(
    f'{path}: invalid UTF-8 at byte {offset} (line {line}: {reason}, bytes {bad.hex(" ")}); {hint}.'
  )


@contextlib.contextmanager
def open_strict(
  path: str, encoding: str = 'utf-8', newline: str | None = None, hint: str = _CONVERT_HINT
):
  """`open(path, encoding=..., newline=...)` for reading, whose decoding errors (raised
  inside the `with` block) become a ValueError naming the file, byte and line.

  Task files (GLUE, CoNLL, SQuAD, CLUE) are read this way: a label or an answer offset
  next to a replaced byte could silently change an example, so they have no 'replace'.

  Args:
    path: a text file.
    encoding: 'utf-8' or 'utf-8-sig' (a byte-order mark dropped).
    newline: as `open`'s ('' for csv).
    hint: what the message tells the user to do.
  """
  with open(path, encoding=encoding, newline=newline) as f:
    try:
      yield f
    except UnicodeDecodeError as e:
      named = _named_error(path, hint)
      if named is None:  # Not this file's bytes: the error stays as it came.
        raise
      raise named from e


def text_lines(path: str, on_decode_error: str, report: DecodeReport) -> Iterator[str]:
  """The lines of a UTF-8 text file, as iterating `open(path)` yields them.

  Args:
    path: the file.
    on_decode_error: 'strict' (an invalid byte is a ValueError naming the file, byte
      and line) or 'replace' (each invalid byte reads as U+FFFD, counted in `report`).
    report: gathers the replaced bytes per file.
  """
  check_mode(on_decode_error)
  if on_decode_error == 'strict':
    with open_strict(path, hint=_REPLACE_HINT) as f:
      yield from f
    return
  with open(path, encoding='utf-8', errors='surrogateescape') as f:
    for line in f:
      count = len(_ESCAPED.findall(line))
      if count:
        report.add(path, count)
        line = line.translate(_TO_REPLACEMENT)
      yield line


def decode_bytes(data: bytes, where: str) -> str:
  """`data.decode('utf-8')`, an error naming `where` and the byte offset (a file read
  whole, such as a vocabulary)."""
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data[: e.start].count(b'\n') + 1
    raise ValueError(
      f'{where}: invalid UTF-8 at byte {e.start} (line {line}: {e.reason}, bytes '
      f'{data[e.start : e.end].hex(" ")}); the file must be UTF-8.'
    ) from e
