"""Whether the libraries a component declares (``Component.libraries``) are installed, and which
peftbench extra installs the missing ones: a method whose library is absent is still listed, and a
run of it is refused in one line that says what to install."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any, Iterable

from ..errors import ConfigError


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
    from packaging.utils import canonicalize_name

    try:
        extras = metadata.metadata("peftbench").get_all("Provides-Extra") or []
        requirements = [Requirement(line) for line in metadata.requires("peftbench") or []]
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return {}
    found: dict[str, str] = {}
    for extra in sorted(extras, key=lambda name: name == "test"):
        for requirement in requirements:
            if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
                found.setdefault(canonicalize_name(requirement.name), extra)
    return found


def install_hint(libraries: Iterable[str]) -> str:
    """What to install for these libraries: peftbench's extras where one brings them, else pip."""
    from packaging.utils import canonicalize_name

    by_extra = {name: _extras().get(canonicalize_name(name)) for name in libraries}
    extras = list(dict.fromkeys(extra for extra in by_extra.values() if extra))
    others = [name for name, extra in by_extra.items() if not extra]
    commands = ([f"pip install 'peftbench[{','.join(extras)}]'"] if extras else []) + (
        [f"pip install {' '.join(others)}"] if others else [])
    return " and ".join(commands)


def require_installed(component: Any, kind: str) -> None:
    """Refuse a component whose libraries are missing, naming what to install."""
    missing = missing_libraries(component)
    if missing:
        raise ConfigError(f"{kind} {component.name} needs {', '.join(missing)}, which is not installed",
                          install_hint(missing))
