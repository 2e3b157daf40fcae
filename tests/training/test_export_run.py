"""A model pretrained with train.py exports to Hugging Face, and transformers computes
what our model computes from the run's checkpoint."""

import os

import numpy as np
import pytest

os.environ.setdefault('USE_TF', '0')  # Keep transformers from importing TensorFlow.
REASON = 'export parity needs torch and transformers: pip install -r requirements-parity.txt'
torch = pytest.importorskip('torch', reason=REASON)
transformers = pytest.importorskip('transformers', reason=REASON)

from configs import quickstart  # noqa: E402
from evaluation import during_training  # noqa: E402
from models import heads  # noqa: E402
from models.convert import __main__ as cli  # noqa: E402
from training import pretrained  # noqa: E402

RUNS = {  # family -> (preset, objective, HF class)
  'bert': ('bert-tiny', 'objectives.mlm', 'BertForMaskedLM'),
  'gpt2': ('gpt2-tiny', 'objectives.clm', 'GPT2LMHeadModel'),
  't5': ('t5-small', 'objectives.denoising', 'T5ForConditionalGeneration'),
}


@pytest.mark.slow
@pytest.mark.parametrize('family', RUNS)
def test_trained_run_exports_to_transformers(tmp_path, spm_path, family):
  preset, objective, hf_class = RUNS[family]
  config = quickstart.get_config()
  config.model.preset, config.objective.module = preset, objective
  config.model.num_layers, config.model.d_model = 2, 32
  config.model.num_heads, config.model.mlp_dim = 2, 64
  if family == 't5':
    config.model.num_decoder_layers = 2
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 32, 3
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.warmup_steps = 1
  config.optimizer.warmup_ratio = 0.0
  run, out = str(tmp_path / 'run'), str(tmp_path / 'hf')
  during_training.train_and_evaluate(config, run)
  assert cli.main(['--to', 'hf', '--family', family, run, out]) == 0
  assert os.path.exists(os.path.join(out, 'spm.model'))

  c = pretrained.load_run(run, family)
  theirs = getattr(transformers, hf_class).from_pretrained(out).eval()
  rng = np.random.default_rng(0)
  tokens = rng.integers(7, c.config.vocab_size, size=(2, 12)).astype(np.int32)
  mask = np.ones_like(tokens)
  mask[1, 9:] = 0
  positions = np.broadcast_to(np.arange(12, dtype=np.int32), tokens.shape)
  ids, attention = torch.from_numpy(tokens).long(), torch.from_numpy(mask).long()
  with torch.no_grad():
    if family == 't5':
      expected = theirs(
        input_ids=ids, attention_mask=attention, decoder_input_ids=ids,
        decoder_attention_mask=attention,
      ).logits.numpy()  # fmt: skip
    else:
      expected = theirs(input_ids=ids, attention_mask=attention).logits.numpy()
  ours_model = {'bert': heads.MaskedLM, 'gpt2': heads.CausalLM, 't5': heads.Seq2SeqLM}[family]
  args = (tokens, mask, positions) * (2 if family == 't5' else 1)
  ours = np.asarray(ours_model(c.config).apply({'params': c.params}, *args))
  real = mask.astype(bool)
  np.testing.assert_allclose(ours[real], expected[real], atol=1e-4)
