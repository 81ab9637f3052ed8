"""The growing cache layers (sedi/serve/_kvcache.py) against transformers' own, step by step: the same keys and
values returned and kept, through hundreds of steps (so across many refills of their spare room) and row surgery."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from sedi.serve import _kvcache


def _pair(kind: str) -> tuple[DynamicLayer, DynamicLayer]:
    if kind == "full":
        return DynamicLayer(), _kvcache.GrowingLayer()
    return DynamicSlidingWindowLayer(sliding_window=8), _kvcache.GrowingWindowLayer(sliding_window=8)


@pytest.mark.parametrize("kind", ["full", "window"])
def test_growing_layers_return_and_keep_what_transformers_layers_do(kind: str) -> None:
    generator = torch.Generator().manual_seed(0)
    reference, growing = _pair(kind)

    def step(columns: int, rows: int) -> None:
        keys = torch.randn(rows, 1, columns, 4, generator=generator)
        values = torch.randn(rows, 1, columns, 4, generator=generator)
        expected, got = reference.update(keys, values), growing.update(keys.clone(), values.clone())
        assert all(torch.equal(e, g) for e, g in zip(expected, got, strict=True))
        assert torch.equal(reference.keys, growing.keys) and torch.equal(reference.values, growing.values)
        if kind == "window":
            assert isinstance(reference, DynamicSlidingWindowLayer) and isinstance(growing, DynamicSlidingWindowLayer)
            assert reference.cumulative_length == growing.cumulative_length

    step(5, 3)  # a prefill shorter than the window
    for _ in range(150):  # more than twice the spare room
        step(1, 3)
    # Row surgery replaces the tensors (as _kvcache.keep_rows does): both layers then go on from the same rows.
    for layer in (reference, growing):
        assert layer.keys is not None and layer.values is not None
        layer.keys, layer.values = layer.keys[[2, 0]], layer.values[[2, 0]]
    for _ in range(70):
        step(1, 2)
    step(3, 2)  # several columns at once


def test_new_cache_grows_the_plain_layers_of_a_model_config() -> None:
    from transformers import Gemma3TextConfig

    config = Gemma3TextConfig(
        num_hidden_layers=2, sliding_window=8, layer_types=["sliding_attention", "full_attention"], vocab_size=32
    )
    cache = _kvcache.new_cache(config)
    assert [type(layer) for layer in cache.layers] == [_kvcache.GrowingWindowLayer, _kvcache.GrowingLayer]
