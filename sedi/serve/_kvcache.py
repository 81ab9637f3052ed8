"""Row surgery on a transformers ``DynamicCache``: the KV cache side of continuous batching.

A running batch is one cache whose rows are left-padded to a common length ``T`` (its "columns"), with a 2D
attention mask marking the padding. A request joins by being prefilled alone and concatenated as a new row;
a finished request leaves by being dropped from the batch dimension, and columns that became padding for
every remaining row are trimmed off the left. Padding sits on the left, so every row's real tokens end at
the same column and a sliding window (Gemma-3: 512 columns) covers the same real tokens it would unbatched.

Only the two plain layer kinds are handled: :class:`DynamicLayer` (full attention) keeps all ``T`` columns,
:class:`DynamicSlidingWindowLayer` keeps the last ``min(T, window - 1)`` and counts ``T`` in
``cumulative_length``, from which transformers derives the mask offsets. Any other cache layer (quantized,
offloaded, linear attention) is refused by :func:`can_merge`, and the engine then decodes one request at a time.
"""

from __future__ import annotations

import torch
from torch.nn.functional import pad
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

_PLAIN = (DynamicLayer, DynamicSlidingWindowLayer)


def can_merge(cache: DynamicCache) -> bool:
    """Whether every layer is a plain dynamic layer holding tensors this module knows how to move."""
    return bool(cache.layers) and all(
        type(layer) in _PLAIN and getattr(layer, "is_initialized", False) and getattr(layer, "keys", None) is not None
        for layer in cache.layers
    )


def _layers(cache: DynamicCache) -> list[tuple[DynamicLayer, torch.Tensor, torch.Tensor]]:
    """Each layer with its keys and values (callers have checked :func:`can_merge`)."""
    out = []
    for layer in cache.layers:
        assert isinstance(layer, DynamicLayer) and layer.keys is not None and layer.values is not None
        out.append((layer, layer.keys, layer.values))
    return out


def _kept(layer: DynamicLayer, columns: int) -> int:
    """How many of ``columns`` columns the layer stores."""
    if isinstance(layer, DynamicSlidingWindowLayer):
        return min(columns, layer.sliding_window - 1)
    return columns


def _set_columns(layer: DynamicLayer, keys: torch.Tensor, values: torch.Tensor, columns: int) -> None:
    layer.keys, layer.values = keys, values
    if isinstance(layer, DynamicSlidingWindowLayer):
        layer.cumulative_length = columns


def pad_left(cache: DynamicCache, columns: int, to: int) -> None:
    """Grow a cache of ``columns`` columns to ``to`` columns by zero padding on the left (masked out)."""
    if to == columns:
        return
    for layer, keys, values in _layers(cache):
        extra = _kept(layer, to) - keys.shape[-2]
        _set_columns(layer, pad(keys, (0, 0, extra, 0)), pad(values, (0, 0, extra, 0)), to)


def append_rows(cache: DynamicCache, other: DynamicCache) -> None:
    """Concatenate ``other``'s rows after ``cache``'s; both must already have the same number of columns."""
    for (layer, keys, values), (_, more_keys, more_values) in zip(_layers(cache), _layers(other), strict=True):
        layer.keys = torch.cat([keys, more_keys], dim=0)
        layer.values = torch.cat([values, more_values], dim=0)


def keep_rows(cache: DynamicCache, rows: torch.Tensor) -> None:
    """Keep only the batch rows at indices ``rows``, in that order."""
    for layer, keys, values in _layers(cache):
        layer.keys, layer.values = keys[rows], values[rows]


def trim_left(cache: DynamicCache, columns: int, drop: int) -> None:
    """Drop the first ``drop`` of ``columns`` columns (padding for every row)."""
    if drop <= 0:
        return
    left = columns - drop
    for layer, keys, values in _layers(cache):
        cut = keys.shape[-2] - _kept(layer, left)
        _set_columns(layer, keys[:, :, cut:], values[:, :, cut:], left)
