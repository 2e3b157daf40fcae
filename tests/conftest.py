"""Test setup: 8 emulated CPU devices, set before JAX is imported anywhere."""

import os
import sys

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402  (after the environment above)


@pytest.fixture(scope='session')
def spm_path(tmp_path_factory) -> str:
  """A small SentencePiece model (vocab 1000) trained once on the embedded corpus."""
  from configs import quickstart
  from data import sources, tokenizers

  config = quickstart.get_config()
  prefix = str(tmp_path_factory.mktemp('spm') / 'spm')
  return tokenizers.train_sentencepiece(
    sources.load_documents(config.data, 'train'), prefix, 1000, 10_000, seed=0
  )
