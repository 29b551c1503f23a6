"""Install ppdet_dac (and, from custom_ops/, its multi-scale deformable attention op).

Install with ``pip install --no-build-isolation -e .``: the op build needs the installed Paddle.
"""
from setuptools import find_packages, setup

setup(
    name="ppdet_dac",
    version="0.1.0",
    description="DAC-DETR (Divide the Attention Layers and Conquer) for PaddleDetection",
    packages=find_packages(include=["ppdet_dac", "ppdet_dac.*"]),
    python_requires=">=3.11",
)
