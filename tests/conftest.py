"""Test setup: 8 emulated CPU devices, set before JAX is imported anywhere; XLA's CPU
backend at LLVM -O0 with its classic fusion emitters; and one persistent compilation cache
for the whole test run.

The test models are tiny, so compiling them costs far more than running them: at
`--xla_backend_optimization_level=0` LLVM skips its optimizations of the generated code
(a 2-layer BERT run of tests/training/test_trains.py compiled for 7.0 s at the default
level, 2.9 s at -O0), and `--xla_cpu_use_fusion_emitters=false` emits each fusion with
XLA's elemental emitter instead of the newer MLIR fusion emitters (the same run's
programs: 4.1-4.5 s of compilation with them, 2.8 s without; the test 8.1-8.8 s, 6.9-7.2 s;
2-core CPU, quiet, December 2026). The programs themselves, XLA's HLO passes included,
are the ones a run compiles; only the machine code emitted for them differs. Train and
eval runs that tests start as subprocesses get the same flags (tests/training/runs.py).

A few tests compare two different programs bit for bit (the guarded and the unguarded
step, a wrapped and a plain optimizer, a sub-model and the whole): a property of the
machine code XLA emits for each, which holds with its default fusion emitters, the ones
every run uses, and not with the classic ones (1-ulp differences). They carry the marker
`default_emitters` and run in a child pytest process compiled as a run compiles
(`pytest_pyfunc_call` below; about 5 s each for the child's start).

The cache directory is made once, by the process pytest starts, and inherited through
the environment by the xdist workers and by the train.py / eval.py subprocesses the
tests start; it is removed when the run ends. A program compiled by one test (the same
tiny model, the same shapes) is then read back by the next instead of compiled again:
every test still runs its program, and XLA's cache key covers the program, its
shapes, the flags and the JAX version. A run starts with an empty cache, as CI's does.
"""

import itertools
import os
import shutil
import sys
import tempfile

# In a child process of a `default_emitters` test: XLA's default fusion emitters.
_DEFAULT_EMITTERS = os.environ.get('PLM_FLAX_TEST_DEFAULT_EMITTERS') == '1'
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
if not _DEFAULT_EMITTERS:
  TEST_XLA_FLAGS += ' --xla_cpu_use_fusion_emitters=false'
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_CREATED_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CREATED_CACHE = tempfile.mkdtemp(prefix='plm-flax-test-jax-cache-')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CREATED_CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
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


@pytest.fixture(scope='session')
def tiny_bert_checkpoint(tmp_path_factory, spm_path) -> tuple:
  """(path, model config, params) of a 2-layer, 4-head, 32-wide BERT encoder saved as a
  converted checkpoint with the SentencePiece fixture; weights at 10x BERT's init scale,
  so that its heads and layers differ (attention pictures, probes)."""
  import flax.linen as nn  # Here, not above: JAX reads the environment set above at import.
  import jax
  import numpy as np

  from data import tokenizers
  from models import heads, presets
  from models.convert import converted

  vocab = tokenizers.load_tokenizer(spm_path).vocab_size
  cfg = presets.get_config(
    'bert-tiny', vocab_size=vocab, d_model=32, num_heads=4, mlp_dim=64, max_len=64, init_std=0.2
  )
  tokens = np.ones((1, 8), np.int32)
  params = heads.Backbone(cfg).init(jax.random.key(0), tokens, tokens)['params']
  params = jax.tree.map(np.asarray, jax.device_get(nn.unbox(params)))
  out = str(tmp_path_factory.mktemp('tiny_bert') / 'converted')
  os.makedirs(out)
  shutil.copy(spm_path, os.path.join(out, 'spm.model'))
  converted.save(out, converted.Converted('bert', cfg, params, [], tokenizer_files=['spm.model']))
  return out, cfg, params


@pytest.fixture(scope='session')
def keyword_sst2_run(spm_path, tmp_path_factory) -> tuple:
  """(root, run): a 40-step train.py fine-tuning run of a 2-layer bert-tiny on a
  keyword-sentiment SST-2 written to root/glue (tests/training/finetune_runs.py), shared by
  the compression and attribution tests; they write their outputs beside it in root."""
  from tests.training import finetune_runs

  root = tmp_path_factory.mktemp('keyword_sst2')
  return root, finetune_runs.keyword_sst2_run(spm_path, str(root))


def pytest_pyfunc_call(pyfuncitem):
  """A `default_emitters` test runs in a child pytest process with XLA's default fusion
  emitters (see the module docstring); its output is shown when it fails."""
  if pyfuncitem.get_closest_marker('default_emitters') is None or _DEFAULT_EMITTERS:
    return None
  import subprocess  # Here: only these few tests start a child.

  env = dict(os.environ, PLM_FLAX_TEST_DEFAULT_EMITTERS='1')
  env['XLA_FLAGS'] = env['XLA_FLAGS'].replace('--xla_cpu_use_fusion_emitters=false', '')
  command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', pyfuncitem.nodeid]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True)
  if done.returncode != 0:
    pytest.fail(
      f'{pyfuncitem.nodeid} failed in its child process (default fusion emitters):\n'
      f'{done.stdout[-6000:]}\n{done.stderr[-2000:]}',
      pytrace=False,
    )
  return True


def pytest_sessionfinish(session, exitstatus):
  """The process that made the compilation cache removes it (xdist workers did not)."""
  del session, exitstatus
  if _CREATED_CACHE is not None and 'PYTEST_XDIST_WORKER' not in os.environ:
    shutil.rmtree(_CREATED_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """The long (slow-marked) tests dealt evenly to the xdist workers' first batches, each
  batch starting with its long tests; the short ones after.

  xdist's load scheduling sends each worker a first batch of consecutive tests (a
  quarter of its share), then refills whichever worker is free. With every long test
  first, the first worker's batch held all of them (64 tests, about half of the suite's
  time) and the run lasted as long as that worker's batch; dealt round-robin, each first
  batch holds its share of the long tests and the short tests fill in the gaps.
  Without xdist this is simply: long tests first.

  Balanced so, and compiled with the classic fusion emitters (module docstring), the suite
  takes about 11.5 minutes on a quiet 2-core machine like CI's (1313 tests in 11:22 in a
  fresh-clone `.ci/run`, December 2026), under the 12-minute target with little to spare;
  every run prints its 30 slowest tests (pyproject addopts). The next cuts: the 32
  tiny-width recipe runs of tests/training/test_trains.py (10-19 s each, mostly
  compilation), the multi-process and benchmark smoke runs (20-35 s each) and one shared
  fine-tuned fixture for tests/test_compress.py, tests/training/test_distill.py and
  test_pruning.py.
  """
  workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
  slow = [item for item in items if item.get_closest_marker('slow') is not None]
  fast = [item for item in items if item.get_closest_marker('slow') is None]
  if workers <= 1:
    items[:] = slow + fast
    return
  # xdist/scheduler/load.py: the first batch of each worker.
  batch = max(len(items) // workers // 4, 2)
  max_chunk = config.getoption('maxschedchunk', None)
  if max_chunk:
    batch = min(batch, max_chunk)
  ordered, later, fast_left = [], [], iter(fast)
  for worker in range(workers):
    share = slow[worker::workers]
    ordered += share[:batch] + list(itertools.islice(fast_left, max(batch - len(share), 0)))
    later += share[batch:]  # More long tests than a batch holds: first in the refills.
  ordered += later + list(fast_left)
  assert sorted(map(id, ordered)) == sorted(map(id, items))
  items[:] = ordered
