"""The host's hardware in /health and `connected`: cores, memory, load, and GPUs when present.

A host here has no GPU, so the GPU path is exercised with a stand-in `nvidia-smi` on the
service's PATH printing what the real one prints for `--query-gpu ... --format=csv,noheader,
nounits` (the parsing and the wire shape are ours; the program is the only stand-in).
"""

from __future__ import annotations

import asyncio
import os
import stat

from cc_executor.client import ExecutorClient
from cc_executor.hardware import parse_gpus, read_hardware, usable_cores
from cc_executor.protocol import ConnectedParams


def test_parse_gpus_reads_nvidia_smi_csv_and_skips_noise():
    text = ("0, NVIDIA A100-SXM4-80GB, 81920\n1, NVIDIA L4, [N/A]\n"
            "NVIDIA-SMI has failed because it couldn't communicate with the driver\n")
    gpus = parse_gpus(text)
    assert [(g.index, g.model, g.memory_mib) for g in gpus] == [
        (0, "NVIDIA A100-SXM4-80GB", 81920), (1, "NVIDIA L4", None)]


def test_read_hardware_without_gpus_leaves_them_out():
    hw = read_hardware(None).wire()
    assert hw["cores"] == usable_cores() >= 1
    assert 0 < hw["memory_available"] <= hw["memory_total"]
    assert len(hw["load"]) == 3
    assert "gpus" not in hw


def _fake_nvidia_smi(folder) -> str:
    folder.mkdir()
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho '0, NVIDIA H100 80GB HBM3, 81559'\necho '1, NVIDIA H100 80GB HBM3, 81559'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(folder)


def test_health_and_connected_report_the_hardware_with_gpus(executor_service, tmp_path):
    path = _fake_nvidia_smi(tmp_path / "bin") + os.pathsep + os.environ.get("PATH", "")
    svc = executor_service(env={"PATH": path})
    hw = svc.health()["hardware"]
    assert hw["cores"] >= 1 and hw["memory_total"] > 0
    assert [g["model"] for g in hw["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    assert hw["gpus"][1] == {"index": 1, "model": "NVIDIA H100 80GB HBM3", "memory_mib": 81559}

    async def session() -> dict:
        async with await ExecutorClient.connect(svc.url) as client:
            return client.session

    connected = ConnectedParams.model_validate(asyncio.run(session()))
    assert connected.hardware is not None and len(connected.hardware.gpus or []) == 2


def test_health_has_no_gpus_when_nvidia_smi_is_absent(executor_service):
    svc = executor_service(env={"PATH": os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if not os.path.exists(os.path.join(p, "nvidia-smi")))})
    hw = svc.health()["hardware"]
    assert "gpus" not in hw and hw["cores"] >= 1
