"""What a record says of where it ran: library versions, git commit, device, machine."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch


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
