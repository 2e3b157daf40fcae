"""The embedded corpus as a TFDS dataset, `pydoc_topics`, so it can go through the TFDS path.

The Python standard library ships its documentation topics (`pydoc_data.topics`,
79 topics, about 465 KB of English written by people) with every install, so
this builder needs no download: `tfds.data_source('pydoc_topics')` prepares it
locally (array_record, random access) on first use. One split, `train`, one
example per topic in sorted-name order; evaluation holds out documents by
`data.eval_fraction` exactly as `data.source='embedded'` does:

  python train.py --config configs/quickstart.py --workdir /tmp/q \\
    --config.data.source=tfds --config.data.tfds_name=pydoc_topics \\
    --config.data.tfds_eval_split=''

Importing this module registers the builder (data/sources.py does so).
"""

import tensorflow_datasets as tfds


class PydocTopics(tfds.core.GeneratorBasedBuilder):
  """Python's documentation topics, one document per topic."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'The topics of the running Python, sorted by name.'}

  def __init__(self, **kwargs):
    kwargs.setdefault('file_format', 'array_record')  # Random access for data_source.
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {'title': tfds.features.Text(), 'text': tfds.features.Text()}
      ),
      description=__doc__,
      homepage='https://docs.python.org/3/',
      disable_shuffling=True,  # Keep sorted-name order: the same split as 'embedded'.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the corpus ships with Python.
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    from pydoc_data.topics import topics

    for title in sorted(topics):
      yield title, {'title': title, 'text': topics[title]}
