"""ERNIE 1.0's knowledge masking (Sun et al. 2019) at quickstart scale on the embedded corpus (CPU).

  python train.py --config configs/cpu/ernie.py --workdir /tmp/ernie
  python train.py --config configs/cpu/ernie.py --workdir /tmp/ernie_entity \\
      --config.objective.ernie_stage=entity
  python -m tools.show --config configs/cpu/ernie.py

Recipe: Sun et al. 2019, "ERNIE: Enhanced Representation through Knowledge
Integration", section 3.2: MLM whose units are basic language units (words;
characters for Chinese), phrases or named entities, each unit wholly masked.
The paper runs the three levels as successive stages; 'mixed' (this config) draws
each row's level with weights `ernie_level_weights` (basic, phrase, entity) so
one run mixes them. Annotated units come from a JSONL corpus
(--config.data.source=jsonl --config.data.text_files=docs.jsonl
--config.data.span_fields=entity_starts:entities,phrase_starts:phrases, each
field a list of [start, end) character spans). Without them the units come from a heuristic
chunker (objectives/ernie.py): entities are runs of capitalised words, phrases
runs of content words between stopwords and punctuation; the paper used
lexical-analysis, chunking and NER tools. The paper's other additions (dialogue
language model on forum data, its Chinese corpora) are not part of this config.

Hardware: any laptop CPU. Expected (measured on the 2-core CPU shared with other
jobs, 500 steps, 'mixed'): loss 8.17 (steps 1-25), 6.49 (step 100), 6.05 (step
500); held-out loss 6.28, accuracy 0.079 (its own corruption; quickstart MLM:
6.36 / 0.096). About 13 minutes on a busy machine. These are this repository's
own figures, not the paper's.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.objective.module = 'objectives.ernie'
  return c
