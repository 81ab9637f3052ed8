"""Every timing benchmark's JSON line says what kind of host made it (sedi.base.hardware.host_summary): the same
benchmark took about 2 h 45 min on a 2-core host with AVX512-BF16 and about 6 h on one with AVX2 only."""

from __future__ import annotations

import json
import os

import torch

from sedi.base.hardware import cpu_has_native_bf16, host_summary
from tests.helpers import load_script


def test_the_host_summary_is_what_torch_and_the_os_report_and_survives_json() -> None:
    host = host_summary()
    assert host["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert host["native_bf16"] is cpu_has_native_bf16()
    assert host["cores"] == len(os.sched_getaffinity(0))
    assert host["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    assert json.loads(json.dumps(host)) == host


def test_the_headline_benchmark_names_a_slow_host_and_only_a_slow_one() -> None:
    note_for = load_script("bench_api_efficiency").slow_host_note
    here = host_summary()
    avx2 = here | {"cpu_capability": "AVX2", "native_bf16": False, "gpu": None, "cores": 2}
    note = note_for(avx2)
    assert note is not None and "CPU capability AVX2, 2 cores" in note and "float32" in note
    assert note_for(avx2 | {"native_bf16": True, "cpu_capability": "AVX512"}) is None
    assert note_for(avx2 | {"gpu": "NVIDIA H100 80GB HBM3"}) is None
