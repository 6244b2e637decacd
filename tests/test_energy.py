"""Energy: RAPL package counters read where readable (wrap-around included), null with the reason
where not; never an estimate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peftbench.run.measure.energy import EnergyMeter


def powercap(root: Path, packages: dict[str, tuple[int, int]]) -> Path:
    """A powercap tree as Linux lays it out: package domains and a core sub-domain that must not count."""
    for name, (energy, limit) in packages.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "energy_uj").write_text(f"{energy}\n")
        (root / name / "max_energy_range_uj").write_text(f"{limit}\n")
    return root


def test_rapl_packages_add_up_across_a_wrap(tmp_path):
    root = powercap(tmp_path, {"intel-rapl:0": (1_000_000, 10_000_000), "intel-rapl:1": (9_500_000, 10_000_000),
                               "intel-rapl:0:0": (5, 10_000_000)})
    with EnergyMeter(torch.device("cpu"), root) as meter:
        powercap(root, {"intel-rapl:0": (3_000_000, 10_000_000), "intel-rapl:1": (500_000, 10_000_000),
                        "intel-rapl:0:0": (9_000_000, 10_000_000)})
    # package 0: +2 J; package 1 wrapped: 0.5 J to its range, then 0.5 J; the core sub-domain is inside package 0.
    assert meter.result == {"joules": pytest.approx(3.0), "source": "rapl-packages (2)", "error": None}


def test_unreadable_counters_leave_null_and_say_why(tmp_path):
    with EnergyMeter(torch.device("cpu"), tmp_path / "none") as meter:
        pass
    assert meter.result["joules"] is None and "no RAPL package counters" in meter.result["error"]
    root = powercap(tmp_path / "garbled", {"intel-rapl:0": (1, 10)})
    (root / "intel-rapl:0" / "energy_uj").write_text("n/a\n")
    with EnergyMeter(torch.device("cpu"), root) as meter:
        pass
    assert meter.result["joules"] is None and meter.result["error"].startswith("ValueError")
