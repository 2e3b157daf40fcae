"""KEPLER (Wang et al. 2021): MLM and knowledge embedding with one encoder, each entity
embedded as the encoder's [CLS] state over its description.

  python train.py --config configs/kepler.py --workdir /tmp/kepler   (offline, embedded)
  python train.py --config configs/kepler.py --workdir /tmp/kepler \\
    --config.objective.knowledge_file=KG.tsv \\
    --config.objective.entity_descriptions=DESCRIPTIONS.tsv [--config.init_from=CKPT]

objectives/kepler.py on the quickstart's data and model (the embedded corpus, a 2-layer
BERT, SentencePiece trained on the fly): MLM on the packed rows plus, for each row, one
triple of KG.tsv (head<TAB>relation<TAB>tail, data/knowledge.py) scored with TransE's
distance over description embeddings against one random negative tail (with no KG.tsv:
the embedded graph of Python's built-ins, data/python_knowledge.py). KEPLER itself
starts from RoBERTa-base and pairs Wikipedia with Wikidata5M (a text data source and a
knowledge file at scale: `--config.data.*`, `--config.init_from`).

Hardware: a laptop CPU at this size. Expected: not measured (Wikidata5M and entity
descriptions are not offline; tests/objectives/test_kepler.py trains it on a fixture).
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.objective.module = 'objectives.kepler'
  c.objective.knowledge_file = ''  # Triples; '' is the embedded Python graph.
  c.objective.ke_weight = 1.0
  c.objective.ke_margin = 4.0
  c.objective.ke_length = 32
  return c
