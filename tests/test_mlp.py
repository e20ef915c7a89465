"""The gated MLP's activation: values and gradient against NumPy float64, and what its gradient keeps."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import print_saved_residuals

from vgpt_jax.nn.mlp import swiglu


def _np_swiglu(h):  # (..., 2, F) float64
    gate, up = h[..., 0, :], h[..., 1, :]
    return up * gate / (1.0 + np.exp(-gate))


def test_swiglu_values_and_gradient_match_float64():
    rng = np.random.default_rng(0)
    h = rng.normal(scale=3.0, size=(2, 5, 2, 7))
    dy = rng.normal(size=(2, 5, 7))
    np.testing.assert_allclose(swiglu(jnp.asarray(h, jnp.float32)), _np_swiglu(h), rtol=1e-6, atol=1e-6)

    _, vjp = jax.vjp(swiglu, jnp.asarray(h, jnp.float32))
    (got,) = vjp(jnp.asarray(dy, jnp.float32))
    # central differences of <dy, swiglu(h)> in float64, one entry of h at a time
    want = np.zeros_like(h)
    eps = 1e-6
    for idx in np.ndindex(h.shape):
        step = np.zeros_like(h)
        step[idx] = eps
        want[idx] = np.sum(dy * (_np_swiglu(h + step) - _np_swiglu(h - step))) / (2 * eps)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_swiglu_bf16_gradient_is_rounded_once():
    rng = np.random.default_rng(1)
    h = rng.normal(scale=2.0, size=(4, 2, 64))
    dy = rng.normal(size=(4, 64))
    _, vjp = jax.vjp(swiglu, jnp.asarray(h, jnp.bfloat16))
    (got,) = vjp(jnp.asarray(dy, jnp.bfloat16))
    _, vjp64 = jax.vjp(swiglu, jnp.asarray(h, jnp.bfloat16).astype(jnp.float32))
    (want,) = vjp64(jnp.asarray(dy, jnp.bfloat16).astype(jnp.float32))
    assert got.dtype == jnp.bfloat16
    # the fp32 gradient of the same bf16 inputs, rounded to bf16: within half a bf16 ulp
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=2**-8, atol=1e-6)


def test_swiglu_gradient_keeps_only_its_input(capsys):
    h = jnp.ones((1, 8, 2, 16), jnp.bfloat16)
    w = jnp.ones((16, 4), jnp.bfloat16)
    print_saved_residuals(lambda h, w: (swiglu(h) @ w).sum(), h, w)
    shapes = sorted(line.split()[0] for line in capsys.readouterr().out.splitlines())
    # h for the activation, its output for the projection's weight gradient, w for h's gradient
    assert shapes == sorted(["bf16[16,4]", "bf16[1,8,16]", "bf16[1,8,2,16]"])
