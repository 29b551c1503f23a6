"""Per-layer prediction heads: a class Linear and a 3-layer box MLP, one clone per decoder layer
plus one for the encoder proposals (clones share no parameters)."""

import math

import paddle.nn as nn
import paddle.nn.functional as F

from . import init


class MLP(nn.Layer):
    """Linear layers with ReLU between them: dims in -> hidden ... -> out."""

    def __init__(self, in_dim, hidden_dim, out_dim, num_layers):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.LayerList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])
        for layer in self.layers:
            init.linear_default_(layer)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def build_heads(hidden_dim, num_classes, num_heads, prior_prob=0.01):
    """Returns (class_heads, box_heads), two LayerLists of ``num_heads`` clones.

    The clones share no parameters but start from the same values (one initialisation, copied).
    Class logits start at the prior log(p/(1-p)) with p = 0.01; the box MLP's last layer starts
    at zero, so the first prediction is the reference box itself.
    """
    cls = nn.Linear(hidden_dim, num_classes)
    init.linear_default_(cls)
    init.constant_(cls.bias, -math.log((1 - prior_prob) / prior_prob))
    box = MLP(hidden_dim, hidden_dim, 4, 3)
    init.constant_(box.layers[-1].weight, 0.0)
    init.constant_(box.layers[-1].bias, 0.0)
    class_heads, box_heads = nn.LayerList([cls]), nn.LayerList([box])
    for _ in range(num_heads - 1):
        cls_copy, box_copy = nn.Linear(hidden_dim, num_classes), MLP(hidden_dim, hidden_dim, 4, 3)
        cls_copy.set_state_dict(cls.state_dict())
        box_copy.set_state_dict(box.state_dict())
        class_heads.append(cls_copy)
        box_heads.append(box_copy)
    return class_heads, box_heads
