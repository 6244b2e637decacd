"""Peak memory of a run: the device's (CUDA's allocator, NVML sampled in a thread) and the process's."""

from __future__ import annotations

import os
import resource
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import torch


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
