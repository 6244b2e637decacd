"""Measurements every run records: parameters, memory, bytes, environment."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

# ------------------------------------------------------------------ parameters


def _logical_numel(param: torch.nn.Parameter) -> int:
    """The weights a parameter holds: a 4-bit quantized weight (bitsandbytes' Params4bit) packs two
    per byte, so its tensor has half as many elements as the layer has weights (peft counts it so)."""
    if type(param).__name__ == "Params4bit" and param.element_size() == 1:
        return param.numel() * 2
    return param.numel()


def count_parameters(
    model: torch.nn.Module,
    is_adapter: Callable[[str], bool],
    head_modules: Iterable[str],
    is_auxiliary: Callable[[str], bool] = lambda name: False,
) -> dict[str, int]:
    """Trainable parameters split into adapter / head / backbone / auxiliary, and the model total.

    A parameter is *auxiliary* when the method trains but does not deploy it
    (auxiliary-task heads), *head* when a component of its dotted name is one
    of the task-head modules the backbone declared (e.g. ``classifier``),
    *adapter* when the method says it added it, else *backbone*. Shared (tied)
    tensors are counted once. ``trainable`` is what deploys (auxiliary excluded).
    """
    heads = set(head_modules)
    split = {"adapter": 0, "head": 0, "backbone": 0}
    auxiliary = 0
    total = 0
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += _logical_numel(param)
        if not param.requires_grad:
            continue
        if is_auxiliary(name):
            auxiliary += param.numel()
        elif is_adapter(name):
            split["adapter"] += param.numel()
        elif heads.intersection(name.split(".")):
            split["head"] += param.numel()
        else:
            split["backbone"] += param.numel()
    return {
        "adapter": split["adapter"],
        "head": split["head"],
        "backbone_trainable": split["backbone"],
        "trainable": sum(split.values()),
        "auxiliary": auxiliary,
        "total": total,
    }


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def directory_bytes(path: str | os.PathLike) -> int:
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------- memory


def _nvml_sampler(stop: threading.Event, result: dict[str, int | None], interval: float, device_index: int) -> None:
    """Peak GPU memory as the driver sees it (includes the CUDA context and
    allocator slack that torch's counters miss), sampled until `stop`."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no driver / no library: the values stay null
        result["nvml_error"] = str(exc)
        return
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        pid = os.getpid()
        while True:
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
            result["nvml_device_used_peak_bytes"] = max(result.get("nvml_device_used_peak_bytes") or 0, used)
            try:
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                mine = sum(p.usedGpuMemory or 0 for p in procs if p.pid == pid)
                if mine:
                    result["nvml_process_peak_bytes"] = max(result.get("nvml_process_peak_bytes") or 0, mine)
            except pynvml.NVMLError:
                pass  # per-process accounting not permitted in some containers
            if stop.wait(interval):
                break
    finally:
        pynvml.nvmlShutdown()


@dataclass
class PeakMemory:
    """Context manager recording peak memory of the work inside it.

    CUDA: torch max allocated / reserved and NVML (device and this process),
    sampled in a background thread. Always: this process's peak RSS
    (``ru_maxrss``: the whole process lifetime, not just the block).
    """

    device: torch.device
    interval_s: float = 0.05
    result: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> "PeakMemory":
        self.result = {
            "cuda_max_allocated_bytes": None,
            "cuda_max_reserved_bytes": None,
            "nvml_process_peak_bytes": None,
            "nvml_device_used_peak_bytes": None,
            "cpu_peak_rss_bytes": None,
        }
        self._stop = threading.Event()
        self._thread = None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._thread = threading.Thread(
                target=_nvml_sampler, args=(self._stop, self.result, self.interval_s, index), daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.device.type == "cuda":
            self.result["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            self.result["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved(self.device)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.result["cpu_peak_rss_bytes"] = rss * (1 if sys.platform == "darwin" else 1024)


# ------------------------------------------------------------------ timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


# ------------------------------------------------------------------ environment

# What the core itself runs on; each component adds the libraries it declares (Component.libraries).
CORE_LIBRARIES = ("peftbench", "torch", "transformers", "accelerate")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def environment(device: torch.device, plugin_distributions: dict[str, str],
                libraries: Iterable[str] = ()) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in dict.fromkeys([*CORE_LIBRARIES, *sorted(libraries)])},
        "plugins": plugin_distributions,
        "device": device_name(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "hostname": platform.node(),
    }


RAPL_ROOT = Path("/sys/class/powercap")


def _rapl_packages(root: Path) -> list[Path]:
    """The CPU package domains of Linux RAPL (``intel-rapl:N``, which AMD CPUs report under too)."""
    return sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").is_file())


def _read_rapl(packages: list[Path]) -> list[tuple[int, int]]:
    """(energy µJ, counter range µJ) per package; raises OSError where the counters are unreadable
    (since 2020 kernels let only root read them)."""
    return [(int((p / "energy_uj").read_text()), int((p / "max_energy_range_uj").read_text())) for p in packages]


@dataclass
class EnergyMeter:
    """Energy the work inside it took, measured, never estimated: on CUDA NVML's total-energy counter
    of the device (the whole GPU: other processes on it count too); on CPU the RAPL package counters
    when this user can read them. Otherwise ``result`` says null and why."""

    device: torch.device
    rapl_root: Path = RAPL_ROOT
    result: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> "EnergyMeter":
        self.result = {"joules": None, "source": None, "error": None}
        self._start = None
        try:
            self._start = self._read()
        except Exception as exc:  # noqa: BLE001 - no driver, no counters, no permission: null with the reason
            self.result["error"] = f"{type(exc).__name__}: {exc}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        try:
            end = self._read()
        except Exception as error:  # noqa: BLE001
            self.result["error"] = f"{type(error).__name__}: {error}"
            return
        if self.device.type == "cuda":
            self.result.update(joules=(end - self._start) / 1000, source="nvml-device-total-energy")
        else:  # a counter wraps at its range
            microjoules = sum((e - s) % limit for (s, limit), (e, _) in zip(self._start, end))
            self.result.update(joules=microjoules / 1e6, source=f"rapl-packages ({len(end)})")

    def _read(self):
        if self.device.type == "cuda":
            import pynvml

            pynvml.nvmlInit()
            try:
                index = self.device.index if self.device.index is not None else torch.cuda.current_device()
                return pynvml.nvmlDeviceGetTotalEnergyConsumption(pynvml.nvmlDeviceGetHandleByIndex(index))  # mJ
            finally:
                pynvml.nvmlShutdown()
        packages = _rapl_packages(self.rapl_root)
        if not packages:
            raise FileNotFoundError(f"no RAPL package counters under {self.rapl_root}")
        return _read_rapl(packages)
