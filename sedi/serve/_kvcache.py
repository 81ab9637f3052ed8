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

:func:`new_cache` gives those two kinds room to grow: transformers' own layers concatenate a step's column onto
the whole cache, a copy of every row's keys and values per layer and step (9.6% of the server's time at 32 rows,
docs/results.md, "Where the embedded teacher's time goes"); these write it into spare columns of one buffer and
hand out views, copying only when the room runs out or row surgery has replaced the tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.functional import pad
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

KV = tuple[torch.Tensor, torch.Tensor]
_SPARE = 64  # columns of room after a layer's keys and values: one copy every 64 steps rather than every step

Room = tuple[torch.Tensor, int, torch.Tensor]  # (buffer, start column, the view of it last handed out)


def _extend(room: Room | None, current: torch.Tensor, new: torch.Tensor) -> Room:
    """``current`` followed by ``new`` as a view of a buffer: in place when ``current`` is still the view ``room``
    handed out and the buffer has room, else in a new buffer with ``_SPARE`` columns to spare."""
    n, add = (current.shape[-2] if current.dim() == 4 else 0), new.shape[-2]
    if room is not None and room[2] is current and room[1] + n + add <= room[0].shape[-2]:
        buffer, start = room[0], room[1]
        buffer[:, :, start + n : start + n + add] = new
        return buffer, start, buffer[:, :, start : start + n + add]
    buffer = new.new_empty((*new.shape[:-2], n + add + _SPARE, new.shape[-1]))
    if n:
        buffer[:, :, :n] = current
    buffer[:, :, n : n + add] = new
    return buffer, 0, buffer[:, :, : n + add]


class GrowingLayer(DynamicLayer):
    """A full-attention layer whose new columns go into spare room (see the module's docstring)."""

    _room_k: Room | None = None
    _room_v: Room | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> KV:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.keys is not None and self.values is not None
        self._room_k = _extend(self._room_k, self.keys, key_states)
        self._room_v = _extend(self._room_v, self.values, value_states)
        self.keys, self.values = self._room_k[2], self._room_v[2]
        return self.keys, self.values


class GrowingWindowLayer(DynamicSlidingWindowLayer):
    """A sliding-window layer whose new columns go into spare room: it returns the last ``window`` columns and
    keeps the last ``window - 1``, exactly as transformers' layer does, as views of one buffer."""

    _room_k: Room | None = None
    _room_v: Room | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> KV:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.record_past:  # assisted decoding's bookkeeping: never used here, left to transformers
            return super().update(key_states, value_states, *args, **kwargs)
        assert self.keys is not None and self.values is not None
        self.cumulative_length += key_states.shape[-2]
        rooms = []
        for room, current, new in ((self._room_k, self.keys, key_states), (self._room_v, self.values, value_states)):
            buffer, start, full = _extend(room, current, new)
            cut = max(full.shape[-2] - (self.sliding_window - 1), 0)
            rooms.append(((buffer, start + cut, full[:, :, cut:]), full))
        (self._room_k, full_keys), (self._room_v, full_values) = rooms
        self.keys, self.values = self._room_k[2], self._room_v[2]
        return full_keys, full_values


def new_cache(config: Any) -> DynamicCache:
    """transformers' cache for ``config``'s layers, its plain layers replaced by growing ones."""
    cache = DynamicCache(config=config)
    cache.layers = [
        GrowingWindowLayer(layer.sliding_window)
        if type(layer) is DynamicSlidingWindowLayer
        else GrowingLayer()
        if type(layer) is DynamicLayer
        else layer
        for layer in cache.layers
    ]
    return cache


_PLAIN = (DynamicLayer, DynamicSlidingWindowLayer, GrowingLayer, GrowingWindowLayer)


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
