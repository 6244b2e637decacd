"""Whether the libraries a component declares (``Component.libraries``) are installed, and which
peftbench extra installs the missing ones: a method whose library is absent is still listed, and a
run of it is refused in one line that says what to install."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any, Iterable

from .errors import ConfigError


def is_installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def missing_libraries(component: Any) -> list[str]:
    return [name for name in getattr(component, "libraries", ()) if not is_installed(name)]


@functools.cache
def _extras() -> dict[str, str]:
    """Distribution -> the first of peftbench's extras (from its installed metadata) that brings it;
    the test extra last, as it exists for the test suite rather than for users."""
    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    try:
        lines = metadata.requires("peftbench") or []
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        lines = []
    for line in sorted(lines, key=lambda text: '"test"' in text):
        requirement = Requirement(line)
        marker = str(requirement.marker or "")
        if "extra ==" in marker:
            found.setdefault(_normalise(requirement.name), marker.split("extra ==")[1].strip(" '\""))
    return found


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def install_hint(libraries: Iterable[str]) -> str:
    libraries = list(libraries)
    extras = list(dict.fromkeys(_extras()[_normalise(n)] for n in libraries if _normalise(n) in _extras()))
    others = [n for n in libraries if _normalise(n) not in _extras()]
    commands = ([f"pip install 'peftbench[{','.join(extras)}]'"] if extras else []) + (
        [f"pip install {' '.join(others)}"] if others else [])
    return " and ".join(commands)


def needs_text(libraries: Iterable[str]) -> str:
    """What a listing shows beside a component that cannot run here."""
    return f"needs {install_hint(libraries)}"


def require_installed(component: Any, kind: str) -> None:
    """Refuse a component whose libraries are missing, naming what to install."""
    missing = missing_libraries(component)
    if missing:
        raise ConfigError(f"{kind} {component.name} needs {', '.join(missing)}, which is not installed",
                          install_hint(missing))
