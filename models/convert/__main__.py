"""Command line: import a checkpoint into our format, or export ours to Hugging Face.

    python -m models.convert --from hf --family bert SRC OUT [--verify] [--tolerance 1e-4]
    python -m models.convert --from tf-bert SRC OUT
    python -m models.convert --to hf SRC OUT
    python -m models.convert --to hf --family bert WORKDIR OUT   # a train.py run

Exit status 0 on success; 1 when --verify finds a difference above --tolerance;
2 on a bad argument, file or config (the message names it).
"""

import argparse
import sys

from models import convert
from models.convert import converted, hf, tf_bert, verify
from training import model_setup, pretrained


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog='python -m models.convert', description=__doc__.split('\n')[0]
  )
  direction = parser.add_mutually_exclusive_group(required=True)
  direction.add_argument('--from', dest='source', choices=('hf', 'tf-bert'), help='Import.')
  direction.add_argument('--to', dest='target', choices=('hf',), help='Export ours.')
  parser.add_argument(
    '--family',
    choices=tuple(convert.FAMILIES),
    help="--from hf: default config's model_type; --to hf from a train.py run: required.",
  )
  parser.add_argument('--verify', action='store_true', help='--from hf: compare with transformers.')
  parser.add_argument(
    '--tolerance', type=float, default=1e-4, help='Largest |diff| --verify accepts.'
  )
  parser.add_argument('src', help='Source directory.')
  parser.add_argument('out', help='Output directory.')
  args = parser.parse_args(argv)
  if args.verify and args.source != 'hf':
    parser.error('--verify needs --from hf (it runs the source through transformers).')
  if args.family and args.source == 'tf-bert':
    parser.error('--family does not apply to --from tf-bert (it is BERT).')
  return args


def _summary(c) -> str:
  cfg = c.config
  return (
    f'{c.family}: {cfg.num_layers} layers, d_model {cfg.d_model}, {cfg.num_heads} heads, '
    f'vocab {cfg.vocab_size}; heads {c.heads}; {len(c.unconverted)} unconverted tensors'
  )


def _export(src: str, out: str, family: str | None):
  """A converted directory (its model.json names the family) or a train.py run (which needs
  `family`: the format to write) as a Hugging Face directory."""
  if model_setup.is_run(src):
    if family is None:
      raise ValueError(f'{src} is a train.py run: pass --family (e.g. bert, gpt2, t5).')
    return hf.export_hf(pretrained.load_run(src, family), out)
  c = converted.load(src)
  if family not in (None, c.family):
    raise ValueError(f'{src} holds a {c.family} checkpoint, not {family}.')
  return hf.export_hf(c, out, tokenizer_files_from=src)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    if args.target == 'hf':
      c = _export(args.src, args.out, args.family)
      print(f'Wrote {args.out} (config.json, model.safetensors) from {_summary(c)}')
      return 0
    if args.source == 'tf-bert':
      c = tf_bert.import_tf_bert(args.src, args.out)
    else:
      c = hf.import_hf(args.src, args.out, args.family)
    print(f'Wrote {args.out} from {_summary(c)}')
  except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.verify:
    diffs = verify.compare(args.src, converted.load(args.out))
    if not verify.report(diffs, args.tolerance):
      return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
