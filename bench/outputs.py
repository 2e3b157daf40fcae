"""What a benchmark leaves behind: its table printed, and <out>.md and <out>.json."""

import json


def write(table: str, record: dict, out: str) -> None:
  """Prints the markdown `table`; with `out`, writes it to <out>.md and `record` (the
  settings and the figures) to <out>.json."""
  print(table)
  if out:
    with open(out + '.md', 'w') as f:
      f.write(table + '\n')
    with open(out + '.json', 'w') as f:
      json.dump(record, f, indent=2)
