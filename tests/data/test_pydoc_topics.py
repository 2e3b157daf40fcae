"""The embedded corpus prepared as a real TFDS dataset reads exactly like source='embedded'."""

import numpy as np
import pytest

from configs import base
from data import loader, sources
from objectives import clm


class _CharTokenizer:
  """Bytes as ids (no training needed); BOS/EOS frame the segments."""

  vocab_size, bos_id, eos_id = 258, 256, 257

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8).astype(np.int32)


@pytest.fixture(scope='module')
def tfds_config(tmp_path_factory):
  config = base.get_config().data
  config.source = 'tfds'
  config.tfds_name = 'pydoc_topics'
  config.tfds_eval_split = ''  # One split: hold out by eval_fraction, as 'embedded' does.
  config.tfds_data_dir = str(tmp_path_factory.mktemp('tfds'))
  return config


def test_prepared_dataset_equals_the_embedded_corpus(tfds_config):
  embedded = base.get_config().data
  for split in ('train', 'eval'):
    via_tfds = sources.load_documents(tfds_config, split)  # Prepares it on first use.
    direct = sources.load_documents(embedded, split)
    assert len(via_tfds) == len(direct) > 0
    assert [via_tfds[i] for i in range(len(via_tfds))] == [direct[i] for i in range(len(direct))]


def test_the_loader_reads_it_through_grain(tfds_config):
  def first_batches(data_config):
    shards = loader.ShardSpec.create(batch_size=4, num_shards=2, process_index=0, process_count=1)
    docs = sources.load_documents(data_config, 'train')
    tok = _CharTokenizer()
    preprocess = clm.make_preprocess(None, tok, 0)
    it = loader.Loader(docs, tok, shards=shards, seq_len=64, framing=clm.FRAMING,
                       preprocess=preprocess, seed=3, train=True)  # fmt: skip
    return [next(it) for _ in range(3)]

  for got, want in zip(
    first_batches(tfds_config), first_batches(base.get_config().data), strict=True
  ):
    assert got.keys() == want.keys()
    for key in got:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
