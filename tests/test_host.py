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


def test_the_headline_benchmark_names_a_slow_host_before_it_starts() -> None:
    note = load_script("bench_api_efficiency").SLOW_HOST.format(**host_summary())
    assert f"CPU capability {torch.backends.cpu.get_cpu_capability()}" in note and "float32" in note
