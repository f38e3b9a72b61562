"""Which samples or frames of a padded batch are real: the one definition of padding that augmentation,
features and the model share. Clips travel as `(batch, width)` tensors with their lengths `(batch,)`;
positions at or beyond a clip's length are padding.
"""

from __future__ import annotations

import torch
from torch import Tensor


def valid_mask(lengths: Tensor, width: int, dtype: torch.dtype = torch.bool) -> Tensor:
    """`(batch,)` lengths -> `(batch, width)` mask of positions t < length: True/1 in the clip, False/0 in the
    padding, in `dtype` (a float dtype multiplies straight into audio or features). On `lengths`' device."""
    mask = torch.arange(width, device=lengths.device) < lengths[:, None]
    return mask if dtype == torch.bool else mask.to(dtype)
