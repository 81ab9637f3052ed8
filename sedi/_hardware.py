"""Questions about the machine that sedi's own code asks (the served teacher's default dtype).

``diversity`` and ``feedback`` never import ``sedi``, so each keeps its own copy of this check
(``diversity.embeddings.cpu_has_native_bf16``, ``feedback._hf.resolve_runtime``); sedi code imports it from here.
"""

from __future__ import annotations


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); emulated bf16 is slower than float32."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
