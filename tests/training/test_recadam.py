"""RecAdam: early steps pull toward the pretrained weights, late steps are Adam's."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import base
from training import optimizers


def _opt(**keys):
  c = base.get_config().optimizer
  c.update(dict(weight_decay=0.0, warmup_steps=0, schedule='constant', clip_norm=0.0))
  c.update(keys)
  return c


def _trees():
  rng = np.random.default_rng(0)
  pretrained = {'w': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
  moved = {'w': pretrained['w'] + 0.25}
  grads = {'w': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
  return pretrained, moved, grads


def test_early_steps_recall_the_pretrained_weights():
  pretrained, moved, grads = _trees()
  opt = _opt(recadam_gamma=2.0, recadam_k=10.0, recadam_t0=100.0, learning_rate=0.1)
  tx = optimizers.build(opt, 1000)
  updates, _ = jax.jit(tx.update)(grads, tx.init(pretrained), moved)
  # lambda(0) = sigmoid(-1000) = 0: the step is -lr x gamma x (theta - theta*).
  np.testing.assert_allclose(updates['w'], -0.1 * 2.0 * 0.25, rtol=1e-6)


def test_late_steps_are_adams_and_the_state_keeps_one_copy():
  pretrained, moved, grads = _trees()
  opt = _opt(recadam_gamma=2.0, recadam_k=10.0, recadam_t0=-100.0, learning_rate=0.1)
  tx = optimizers.build(opt, 1000)
  state = tx.init(pretrained)
  updates, _ = tx.update(grads, state, moved)
  adam = optax.adam(0.1, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  expected, _ = adam.update(grads, adam.init(pretrained), moved)
  np.testing.assert_allclose(updates['w'], expected['w'], rtol=1e-5)
  # Adam's two moments plus theta*: three copies of the parameters.
  sizes = sum(x.size for x in jax.tree.leaves(state) if x.ndim)
  assert sizes == 3 * pretrained['w'].size
  np.testing.assert_array_equal(state[2].pretrained['w'], pretrained['w'])
