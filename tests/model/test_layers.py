"""Building blocks: inverted dropout and the gradient multiplier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mert_jax.model import layers


def test_dropout_identity_when_off_and_inverted_when_on() -> None:
  x = jnp.ones((64, 256))
  assert layers.dropout(x, 0.3, None, True) is x
  assert layers.dropout(x, 0.0, None, False) is x
  with pytest.raises(ValueError, match="dropout needs a PRNG key"):
    layers.dropout(x, 0.3, None, False)
  y = np.asarray(layers.dropout(x, 0.3, jax.random.key(0), False))
  np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)  # kept values scaled up
  assert abs((y == 0).mean() - 0.3) < 0.01  # 16,384 draws: 4 standard errors
  z = np.asarray(layers.dropout(x, 0.3, jax.random.key(1), False))
  assert (y != z).any()


def test_grad_multiply_is_identity_forward_and_scales_the_gradient() -> None:
  x = jnp.arange(5.0)
  np.testing.assert_array_equal(layers.grad_multiply(x, 0.1), x)
  g = jax.grad(lambda v: jnp.sum(layers.grad_multiply(v, 0.1) ** 2))(x)
  np.testing.assert_allclose(g, 0.1 * 2 * x, rtol=1e-6)
