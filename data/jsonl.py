"""JSON-lines documents and records: one JSON object per line.

Pretraining documents (`data.source='jsonl'`) hold their text under `data.text_key` and,
optionally, annotated character spans under the fields that `data.span_fields` names
(ERNIE's entities and phrases, a word segmentation); such a document is a `SpannedText`,
a str that also carries them. Task readers (FewCLUE) read their records line by line
with `jsonl_records`. Invalid UTF-8 is an error naming the file and byte, or U+FFFD
counted in the log with `data.on_decode_error='replace'` (data/text_decoding.py).
"""

import json
from collections.abc import Sequence

from data import text_decoding


class SpannedText(str):
  """A document's text that carries annotated character spans:
  `spans[row key] = [(start, end), ...]`, e.g. {'entity_starts': [(0, 16)]}."""

  spans: dict[str, list[tuple[int, int]]]

  def __new__(cls, text: str, spans: dict):
    out = super().__new__(cls, text)
    out.spans = spans
    return out


def parse_span_fields(spec: str) -> dict[str, str]:
  """'row_key:json_field,...' (data.span_fields) -> {row key: JSON field}."""
  fields = {}
  for item in filter(None, (p.strip() for p in spec.split(','))):
    key, colon, field = item.partition(':')
    if not colon or not key.strip() or not field.strip():
      raise ValueError(
        f'data.span_fields item {item!r} must be row_key:json_field, '
        "e.g. 'entity_starts:entities,phrase_starts:phrases'."
      )
    fields[key.strip()] = field.strip()
  return fields


def jsonl_records(
  path: str, on_decode_error: str = 'strict', report: text_decoding.DecodeReport | None = None
):
  """Yields (where, record) for each non-blank line of a JSON-lines file, `where` being
  'path:line' for error messages; a line that is not JSON is an error naming it.

  Args:
    path: the file.
    on_decode_error: 'strict' or 'replace' (data/text_decoding.py).
    report: counts the bytes replaced; by default a warning is logged for this file.
  """
  own_report = report is None
  report = text_decoding.DecodeReport() if own_report else report
  for number, line in enumerate(text_decoding.text_lines(path, on_decode_error, report), 1):
    if not line.strip():
      continue
    where = f'{path}:{number}'
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f'{where}: not a JSON object ({e}).') from e
    yield where, record
  if own_report:
    report.log(1)


def read_jsonl_documents(
  paths: Sequence[str], text_key: str, span_fields: str, on_decode_error: str = 'strict'
) -> list[str]:
  """One document per JSON line: `text_key` and the spans of `span_fields`.

  Spans are [start, end) character offsets into the text, as lists of pairs; a
  missing field means no span of that kind. Errors name the file and line; invalid
  UTF-8 is handled as `on_decode_error` says (with 'replace', one warning for all files).
  """
  fields = parse_span_fields(span_fields)
  text_decoding.check_mode(on_decode_error)
  report = text_decoding.DecodeReport()
  documents = []
  for path in paths:
    for where, record in jsonl_records(path, on_decode_error, report):
      text = record.get(text_key) if isinstance(record, dict) else None
      if not isinstance(text, str):
        raise ValueError(f'{where}: no string field data.text_key={text_key!r}.')
      if not text.strip():
        continue
      spans = {}
      for key, field in fields.items():
        pairs = record.get(field, [])
        valid = isinstance(pairs, list) and all(
          isinstance(p, list | tuple) and len(p) == 2 and 0 <= p[0] < p[1] <= len(text)
          for p in pairs
        )
        if not valid:
          raise ValueError(
            f'{where}: field {field!r} must be a list of [start, end) character offsets '
            f'within the text (0 <= start < end <= {len(text)}); got {str(pairs)[:80]}.'
          )
        spans[key] = [(int(a), int(b)) for a, b in pairs]
      documents.append(SpannedText(text, spans) if fields else text)
  report.log(len(paths))
  return documents
