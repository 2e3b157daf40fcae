import pytest

from configs import quickstart
from data import sources, tokenizers


@pytest.fixture(scope='session')
def spm_path(tmp_path_factory) -> str:
  """A small SentencePiece model (vocab 1000) trained once on the embedded corpus."""
  config = quickstart.get_config()
  prefix = str(tmp_path_factory.mktemp('spm') / 'spm')
  return tokenizers.train_sentencepiece(
    sources.load_documents(config.data, 'train'), prefix, 1000, 10_000, seed=0
  )
