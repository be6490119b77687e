"""GPUs of every maker: how many a node has, which ones its workers take, and
the variable that pins a process to one (CUDA_VISIBLE_DEVICES and its kin).

Detection never creates a GPU context: NVML or nvidia-smi for NVIDIA, sysfs for
AMD and Intel.
"""
from __future__ import annotations

import contextlib
import importlib.util
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from start_daskmpi.errors import LaunchError


@dataclass(frozen=True)
class Vendor:
    """How a GPU maker's runtime is told which GPUs a process may use."""

    name: str
    masks: tuple[str, ...]  # variables a batch system may have set, read in this order


VENDORS = {
    "nvidia": Vendor("nvidia", ("CUDA_VISIBLE_DEVICES",)),
    "amd": Vendor("amd", ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")),
    "intel": Vendor("intel", ("ZE_AFFINITY_MASK",)),
}
NVIDIA_PIN = VENDORS["nvidia"].masks[0]
MASKS = tuple(variable for vendor in VENDORS.values() for variable in vendor.masks)
# PCI device ids of Intel's data-centre GPUs (Max, Flex), not of integrated graphics.
INTEL_DATA_CENTRE_GPUS = ("0x0bd", "0x56c")


def parse_visible_devices(value: str) -> list[str]:
    """Mask entries (indices, UUIDs, Intel's card.tile); '' and 'NoDevFiles' mean none."""
    if value.strip() == "NoDevFiles":
        return []
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def choose_gpus(
    visible: str | None,
    detected: int,
    override: int | None,
    host: str = "this node",
    variable: str = NVIDIA_PIN,
) -> tuple[str, ...]:
    """The GPUs a node's workers use: the batch system's mask ``variable`` when
    it set one (its entries, not raw indices), else the detected ones;
    --gpus-per-node takes the first N, or simulates N where no GPU can be seen."""
    if visible is not None:
        devices, source = parse_visible_devices(visible), f"{variable}={visible}"
    else:
        devices, source = [str(i) for i in range(detected)], "detected"
    if override is None or override <= len(devices):
        return tuple(devices[:override])
    if visible is None and detected == 0:
        return tuple(str(i) for i in range(override))
    raise LaunchError(
        f"--gpus-per-node {override}, but {host} has {len(devices)} GPU(s) ({source}): "
        f"use --gpus-per-node {len(devices)} or fewer"
    )


def count_gpus_nvml() -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def count_gpus_nvidia_smi() -> int:
    done = subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
    )
    return sum(line.startswith("GPU ") for line in done.stdout.splitlines())


def count_gpus() -> int:
    """NVIDIA GPUs on this node, by NVML or nvidia-smi: neither creates a CUDA context."""
    for counter in (count_gpus_nvml, count_gpus_nvidia_smi):
        try:
            return counter()
        except Exception:
            continue
    return 0


def count_gpus_amd(topology: Path = Path("/sys/class/kfd/kfd/topology/nodes")) -> int:
    """AMD GPUs, as the ROCm kernel driver lists its agents (a CPU has no SIMDs)."""
    return sum(
        bool(re.search(r"^simd_count\s+[1-9]", path.read_text(), re.MULTILINE))
        for path in topology.glob("*/properties")
    )


def count_gpus_intel(drm: Path = Path("/sys/class/drm")) -> int:
    """Intel data-centre GPUs, by their PCI ids (integrated graphics do not count)."""
    count = 0
    for card in drm.glob("card[0-9]*"):
        if "-" in card.name:  # a connector (card0-DP-1), not a card
            continue
        with contextlib.suppress(OSError):
            vendor = (card / "device" / "vendor").read_text().strip()
            device = (card / "device" / "device").read_text().strip()
            count += vendor == "0x8086" and device.startswith(INTEL_DATA_CENTRE_GPUS)
    return count


GPU_COUNTERS: dict[str, Callable[[], int]] = {
    "nvidia": count_gpus, "amd": count_gpus_amd, "intel": count_gpus_intel,
}


def find_gpus(
    vendor_option: str | None,
    environ: Mapping[str, str],
    counters: Mapping[str, Callable[[], int]] = GPU_COUNTERS,
) -> tuple[str, str | None, int]:
    """The node's GPUs: (the variable that pins them, the mask the batch system
    set in it or None, the number detected when no mask says).  The maker is
    --gpu-vendor's, else the one whose mask is set, else the first whose GPUs
    are found; none found: NVIDIA's variable, and no GPU."""
    makers = [VENDORS[vendor_option]] if vendor_option else list(VENDORS.values())
    for vendor in makers:
        for variable in vendor.masks:
            if variable in environ:
                return variable, environ[variable], 0
    for vendor in makers:
        found = counters[vendor.name]()
        if found or vendor_option:
            return vendor.masks[0], None, found
    return NVIDIA_PIN, None, 0


def own_masks(environ: Mapping[str, str]) -> dict[str, str]:
    """The GPU masks set in this process's environment."""
    return {variable: environ[variable] for variable in MASKS if variable in environ}


def check_gpu_required(host: str, real_gpus: int, chosen_gpus: int, has_cupy: bool) -> None:
    """--require-gpu: a node without a GPU (or CuPy) is an error, not a CPU fallback."""
    if real_gpus == 0:
        raise LaunchError(
            f"--require-gpu, but {host} has no GPU (no mask set, none found by NVML, "
            "nvidia-smi, ROCm or Intel's driver): run on a GPU node, or leave "
            "--require-gpu out for CPU workers"
        )
    if chosen_gpus == 0:
        raise LaunchError("--require-gpu and --gpus-per-node 0 contradict: drop one")
    if not has_cupy:
        raise LaunchError(
            f"--require-gpu, but CuPy is not installed on {host}: "
            "pip install 'start-daskmpi[gpu]'"
        )


def uses_dask_cuda(gpu: str | None, pin: str, nanny: bool) -> bool:
    """The one rule for which workers are dask-cuda's: on an NVIDIA GPU, behind a
    nanny (dask-cuda's worker is nannies), where dask-cuda is installed."""
    return (
        gpu is not None and pin == NVIDIA_PIN and nanny
        and importlib.util.find_spec("dask_cuda") is not None
    )
