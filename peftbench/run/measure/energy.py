"""Energy a run used, where the machine reports it (Intel RAPL counters on Linux)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


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
