"""The masks of the model, named so that the name says which value means what.

Three kinds of mask travel through ``ppdet_dac/modeling``; each has one name and one meaning
(docs/algorithm.md#1-mask-vocabulary):

``image_mask``
    float [B, H, W], 1 = image pixel, 0 = padding. What ppdet's batch transforms write and what
    the exported graph takes; the reader's and the graph's key for it stays ppdet's ``pad_mask``.
``padding`` (``level_padding`` [B, H_l, W_l] per feature level, ``token_padding`` [B, S] once
    the levels are flattened into S encoder tokens)
    bool, True = padding, False = image. Inside the model every spatial mask is of this kind.
``attn_blocked`` / ``attn_allowed``
    bool [Q', Q'] over the decoder queries (row = query, column = key): ``attn_blocked`` True =
    this query may not see that key (what the denoising queries need);
    ``attn_allowed`` = not ``attn_blocked``, the form Paddle's ``nn.MultiHeadAttention`` takes as
    its ``attn_mask`` argument.
"""

import paddle


def padding_from_image_mask(image_mask):
    """image_mask: float [B, H, W] (1 = image) -> bool [B, H, W], True = padding."""
    return image_mask < 0.5


def attn_allowed_from_blocked(attn_blocked):
    """attn_blocked: bool [Q', Q'] (True = blocked) -> bool [Q', Q'], True = may attend."""
    return paddle.logical_not(attn_blocked)
