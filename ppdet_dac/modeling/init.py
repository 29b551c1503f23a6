"""Initialisers that reproduce the official (PyTorch) defaults, so training from scratch matches."""

import math

import paddle
from paddle.nn.initializer import Constant, Normal, Uniform, XavierUniform


def linear_default_(layer):
    """PyTorch's nn.Linear default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(layer.weight.shape[0])  # paddle Linear weight is [in, out]
    Uniform(-bound, bound)(layer.weight)
    if layer.bias is not None:
        Uniform(-bound, bound)(layer.bias)


def xavier_(param, fan_in=None, fan_out=None):
    """Xavier-uniform; fan_in/fan_out override the ones Paddle would derive from the shape."""
    XavierUniform(fan_in=fan_in, fan_out=fan_out)(param)


def constant_(param, value):
    Constant(value)(param)


def normal_(param, std=1.0):
    Normal(0.0, std)(param)


def bias_default_(bias, fan_in):
    """PyTorch's default bias init of a layer with ``fan_in`` inputs."""
    bound = 1.0 / math.sqrt(fan_in)
    Uniform(-bound, bound)(bias)


def assign_(param, array):
    param.set_value(paddle.to_tensor(array, dtype=param.dtype))
