"""Trains the SentencePiece tokenizer of a config's training documents.

  python -m tools.train_tokenizer --config configs/base.py --output /tmp/tok/spm \
    [--config.data.vocab_size=8000 --config.data.source=text ...]

Writes `<output>.model`; point `--config.data.tokenizer_path` at it to reuse it.
"""

from absl import app, flags
from ml_collections import config_flags

from data.sources import load_documents
from data.tokenizers import load_tokenizer, train_sentencepiece

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output path prefix; writes PREFIX.model.')
flags.mark_flags_as_required(['config', 'output'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  documents = load_documents(config.data, 'train')
  path = train_sentencepiece(
    documents,
    _OUTPUT.value,
    config.data.vocab_size,
    config.data.tokenizer_train_docs,
    config.seed,
  )
  tokenizer = load_tokenizer(path)
  sample = next((line for line in documents[0].splitlines() if line.strip()), '')[:200]
  ids = tokenizer.encode(sample)
  print(f'Wrote {path} (vocab_size={tokenizer.vocab_size}, sha256={tokenizer.fingerprint()})')
  print(f'Sample: {sample!r}')
  print(f'Pieces: {[tokenizer.id_to_piece(i) for i in ids]}')
  print(f'Ids:    {ids.tolist()}')


if __name__ == '__main__':
  app.run(main)
