"""Files a run or a suite writes, written so that no reader ever sees half of one: JSON through a
temporary file and a rename, JSON lines appended and synced, and what a killed writer leaves
behind found and removed."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import math
import os
import platform
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import ResultsError

PARTIAL_WRITE = re.compile(r"^\.[^/]+\.json\.[A-Za-z0-9_]+$")  # write_json_atomic's temporary files


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: a non-finite float is an unknown value (null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _read_umask() -> int:
    current = os.umask(0)  # the only way to read it is to set it; done once, before any thread starts
    os.umask(current)
    return current


_UMASK = _read_umask()


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write to a temporary file, then rename: readers see the old file or the new one, never half.
    The file gets the permissions of any file the user creates (mkstemp's are 0600), so colleagues
    on a shared results folder can read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            data = payload.to_dict() if hasattr(payload, "to_dict") else payload  # a RunRecord
            json.dump(_clean(data), handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files `write_json_atomic` left in ``folder`` when its process was killed
    between writing and renaming (``.<name>.<random>``); returns them."""
    partial = [p for p in folder.iterdir() if p.is_file() and PARTIAL_WRITE.match(p.name)]
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def append_jsonl(path: Path, payload: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(_clean(payload), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def ensure_writable(results_dir: Path) -> None:
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=results_dir, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise ResultsError(
            f"results folder {results_dir} is not writable ({exc.strerror or exc})",
            "pass --results DIR with a folder you can write to",
        ) from None


def process_alive(pid: int | None, hostname: str | None, started_at: str | None = None) -> bool:
    """Whether the process that wrote a running record still runs. A zombie (killed, not yet reaped
    by its new parent) has ended; so has a pid the system gave to a process started after the run."""
    import psutil

    if pid is None or hostname != platform.node():
        return hostname is not None and hostname != platform.node()  # another machine: assume alive
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    if started_at:
        try:
            return created <= dt.datetime.fromisoformat(started_at).timestamp() + 1
        except ValueError:
            pass
    return True


CLAIMS = ".claims"  # in a results folder: one file per configuration being run now
FRESH_CLAIM_SECONDS = 10  # a claim file this young and still empty is being written, not abandoned


@contextlib.contextmanager
def claimed(results: Path, key: str, what: str) -> Iterator[None]:
    """Hold an atomic claim on one configuration (``key``, its config hash) in a results folder while it
    runs: a second process starting it meanwhile is refused in one line; a claim whose process ended
    (killed) is taken over."""
    folder = results / CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / key
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _refuse_or_take_over(path, results, what)
            continue
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as claim:
                json.dump({"pid": os.getpid(), "host": platform.node(),
                           "started_at": dt.datetime.now(dt.timezone.utc).isoformat()}, claim)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if out_of_room(exc):
                raise ResultsError(f"cannot start a run in {results} ({exc.strerror or exc})",
                                   "free space in that folder (or pass another --results)") from None
            raise
        break
    else:
        raise ResultsError(f"cannot claim {what} in {results}: another process keeps claiming it")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _refuse_or_take_over(path: Path, results: Path, what: str) -> None:
    import time

    from ..errors import ConfigError

    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        owner = None
    fresh = path.exists() and time.time() - path.stat().st_mtime < FRESH_CLAIM_SECONDS
    if (owner is None and fresh) or (owner and process_alive(owner.get("pid"), owner.get("host"),
                                                             owner.get("started_at"))):
        who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
        raise ConfigError(f"{what} is running now in {results} ({who})",
                          "wait for it to finish, or run another seed or --results folder")
    path.unlink(missing_ok=True)  # its process ended without letting go


ROOM_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}


def out_of_room(exc: BaseException) -> bool:
    """A full disk, a quota or a read-only filesystem (libraries such as safetensors wrap the OSError)."""
    if isinstance(exc, OSError) and exc.errno in ROOM_ERRNOS:
        return True
    return any(words in str(exc) for words in ("No space left", "Read-only file system", "Disk quota exceeded"))


# Fields that define a run (its hash is computed from them) keep what the user gave.
IDENTITY_FIELDS = ("config", "config_hash")


def published(value: Any, key: str | None = None) -> Any:
    """A record as it can be published: no absolute path of the machine that ran it. A path inside an
    installed package becomes ``package:<path inside site-packages>``, one inside peftbench's cache
    ``cache:<path inside it>`` (a converted GGUF checkpoint: a relative path would climb into the
    user's home), any other absolute path the path relative to the working directory the run started
    from (how `--set data_dir=` is usually given)."""
    if isinstance(value, dict):
        return {k: v if k in IDENTITY_FIELDS and key is None else published(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [published(v, key) for v in value]
    if isinstance(value, str) and os.path.isabs(value) and "\n" not in value and len(value) < 4096:
        _, inside, rest = value.partition(f"{os.sep}site-packages{os.sep}")
        if inside:
            return f"package:{rest}"
        cache = str(cache_root().resolve())
        if value == cache or value.startswith(cache + os.sep):
            return f"cache:{os.path.relpath(value, cache)}"
        return os.path.relpath(value)
    return value


def publish_json_files(folder: Path) -> None:
    """The JSON files a library wrote beside saved weights, rewritten as records are (peft's
    adapter_config.json names the base model by its absolute path). Nothing reads that path back:
    an artefact is loaded onto a base given explicitly."""
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        public = published(data, key="file")
        if public != data:
            with contextlib.suppress(ValueError):  # a value JSON cannot hold strictly (NaN): left as written
                write_json_atomic(path, public)


def write_record_or_clean(path: Path, record: Any, ended: str) -> None:
    """The run record, or, where there is no room to write it, nothing at all: the run's folder is
    removed (no empty folder, no record left ``running``) and the error is one line saying how the run
    ended (``ended``), so what finished is at least on the screen."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
        write_json_atomic(path, published(record.to_dict() if hasattr(record, "to_dict") else record))
    except OSError as exc:
        if not out_of_room(exc):
            raise
        shutil.rmtree(path.parent, ignore_errors=True)
        raise ResultsError(f"cannot write the run record into {path.parent.parent} ({exc.strerror or exc}); {ended}",
                           "free space in that folder (or pass another --results) and run it again") from None


def cache_root() -> Path:
    env = os.environ.get("PEFTBENCH_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "peftbench"
