"""Initialisers of the official from-scratch training (spec 3.2)."""

from __future__ import annotations

import flax.linen as nn

# Phi-3 stack: Linear and Embedding weights N(0, 0.02).
phi3_normal = nn.initializers.normal(stddev=0.02)
zeros = nn.initializers.zeros


def xavier_uniform_2d(in_axes: tuple[int, ...], out_axes: tuple[int, ...]):
    """torch's xavier_uniform_ on the weight viewed as a (fan_out, fan_in) matrix."""
    return nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=in_axes, out_axis=out_axes)
