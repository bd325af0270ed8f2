"""The positional convolution's einsum kernel gradient equals XLA's own gradient of the grouped
conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mert_jax.model.pos_conv import TAP_CHUNK, grouped_conv


@pytest.mark.parametrize(
  "kernel_size,groups,dim", [(128, 16, 64), (16, 4, 32), (7, 2, 8), (TAP_CHUNK + 3, 1, 4)]
)
def test_einsum_kernel_gradient_equals_xla(kernel_size: int, groups: int, dim: int) -> None:
  rng = np.random.RandomState(kernel_size)
  x = jnp.asarray(rng.randn(2, 50, dim).astype(np.float32))
  kernel = jnp.asarray(0.1 * rng.randn(kernel_size, dim // groups, dim).astype(np.float32))
  # a random projection of the output
  r = jnp.asarray(rng.randn(2, 50 + 1 - kernel_size % 2, dim).astype(np.float32))

  def loss(impl):
    fn = lambda x, k: jnp.sum(grouped_conv(x, k, groups, impl) * r)
    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))

  (lx, (dx_x, dk_x)), (le, (dx_e, dk_e)) = loss("xla")(x, kernel), loss("einsum")(x, kernel)
  assert float(lx) == float(le)  # same forward
  np.testing.assert_array_equal(dx_e, dx_x)  # same input gradient
  np.testing.assert_allclose(dk_e, dk_x, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(dk_x))))


def test_einsum_gradient_in_bf16_is_close_to_fp32() -> None:
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(2, 60, 32).astype(np.float32))
  kernel = jnp.asarray(0.1 * rng.randn(16, 8, 32).astype(np.float32))

  def grad(dt):
    conv = lambda k: grouped_conv(x.astype(dt), k.astype(dt), 4, "einsum").astype(jnp.float32)
    return jax.grad(lambda k: jnp.sum(jnp.square(conv(k))))(kernel)

  g32, g16 = grad(jnp.float32), grad(jnp.bfloat16)
  assert g16.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(g16 - g32)) / jnp.max(jnp.abs(g32))) < 2e-2


def test_auto_is_chosen_for_the_platform_lowered_for() -> None:
  """ "auto" is the einsum gradient when lowered for the CPU, whatever the default backend, and is
  decided when lowering (so a TPU compile on a CPU host gets the TPU's choice, and a GPU one
  XLA's gradient)."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 40, 32)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((8, 2, 32)), jnp.float32)

  def grads(impl: str):
    loss = lambda k_, x_: (grouped_conv(x_, k_, 16, impl) ** 2).sum()  # noqa: E731
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(k, x)

  auto, einsum, xla = grads("auto"), grads("einsum"), grads("xla")
  for a, e in zip(auto, einsum):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e))  # bit-identical: the same path
  assert float(jnp.abs(auto[0] - xla[0]).max()) > 0  # a different summation, so not that one


@pytest.mark.parametrize(
  "platform, expected", [("tpu", "einsum"), ("cuda", "xla"), ("cpu", "einsum")]
)
def test_auto_lowers_to_the_platforms_choice(platform: str, expected: str) -> None:
  """Lowered for each platform (no such device needed), "auto" is the einsum kernel gradient (a
  dot_general) on CPU and TPU, and XLA's convolution gradient (none) on GPU."""
  x, k = jnp.ones((2, 40, 32)), jnp.ones((8, 2, 32))

  def dots(impl: str) -> int:
    loss = lambda k_, x_: (grouped_conv(x_, k_, 16, impl) ** 2).sum()  # noqa: E731
    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(k, x)
    return lowered.lower(lowering_platforms=(platform,)).as_text().count("dot_general")

  assert dots("einsum") > 0 and dots("xla") == 0  # the two paths are told apart
  assert dots("auto") == dots(expected)
