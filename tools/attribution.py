"""Which tokens a fine-tuned classifier's answers rest on: integrated gradients (or
gradient x input) per token, as coloured text in an HTML page.

  python -m tools.attribution --run RUN --examples 20 --out /tmp/attribution
  python -m tools.attribution --run RUN --text 'a gripping , funny film .' --out DIR

--run is a train.py fine-tuning run of a sentence (pair) classification task
(configs/glue.py, configs/clue.py: its best checkpoint, else its newest). The texts are
--text (with --text_b as a pair's second sentence), the lines of --texts_file (a tab
between a pair's sentences), and the first --examples records of the run's dev split
(with their gold labels). Each is explained for the class the model predicts
(evaluation/attribution.py). Writes in --out:

  attribution.html    each text's tokens coloured by attribution (red: towards the
                      predicted class; blue: against), with F(x), F(baseline) and the
                      completeness error of integrated gradients;
  attributions.json   per text: pieces, scores, prediction, label and the figures above;

and prints each text's three most attributed tokens and the completeness errors' median
and maximum (relative to F(x) - F(b)): a large error asks for more --steps.
"""

import numpy as np
from absl import app, flags

from configs import base
from data import tasks
from evaluation import attribution

_RUN = flags.DEFINE_string('run', None, 'A fine-tuned classification run (train.py workdir).')
_OUT = flags.DEFINE_string('out', None, 'Directory for attribution.html and attributions.json.')
_TEXT = flags.DEFINE_string('text', None, 'A text to explain.')
_TEXT_B = flags.DEFINE_string('text_b', None, 'Second sentence of a pair (with --text).')
_TEXTS_FILE = flags.DEFINE_string('texts_file', None, 'Texts to explain, one a line.')
_EXAMPLES = flags.DEFINE_integer('examples', 0, "Also the first N of the run's dev records.")
_METHOD = flags.DEFINE_enum('method', 'integrated_gradients', attribution.METHODS, 'Method.')
_STEPS = flags.DEFINE_integer('steps', 64, "Integrated gradients' quadrature points.")
_SEQ_LEN = flags.DEFINE_integer('seq_len', 0, "Tokens per text (0: the run's seq_len).")
_BATCH = flags.DEFINE_integer('batch_size', 16, 'Texts per pass.')


def main(argv):
  del argv
  if not _RUN.value or not _OUT.value:
    raise app.UsageError('Pass --run and --out (and --text, --texts_file or --examples).')
  texts = tasks.read_texts(_TEXT.value, _TEXT_B.value, _TEXTS_FILE.value)
  found = attribution.explain(
    _RUN.value, texts, _EXAMPLES.value, _OUT.value, method=_METHOD.value, steps=_STEPS.value,
    seq_len=_SEQ_LEN.value, batch_size=_BATCH.value, defaults=base.get_config(),
  )  # fmt: skip
  for a in found:
    top = ', '.join(f'{piece} {score:+.3f}' for piece, score in a.top(3))
    print(f'label {a.label} predicted {a.prediction}: {top} | {a.text[:70]}')
  if _METHOD.value == 'integrated_gradients':
    errors = attribution.relative_errors(found)
    print(f'completeness error / |F(x) - F(b)|: median {np.median(errors):.2e}, '
          f'max {errors.max():.2e} ({_STEPS.value} steps)')  # fmt: skip
  print(f'Wrote {_OUT.value}/attribution.html and attributions.json')


if __name__ == '__main__':
  app.run(main)
