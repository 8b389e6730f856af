"""Writing a run directory atomically: everything goes into a hidden partial directory that is renamed into
place only after config.json (with the sha256 of every file) is written, so a crash never leaves a run that
looks complete."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from data.checksum import sha256_file
from data.errors import RunError
from engine.services.run import CATALOG_NAME, CONFIG_NAME, RUN_FORMAT


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for dist in ("deftrec", "torch", "transformers", "peft", "faiss-cpu", "sqlite-utils"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def training_lock(root: str | Path, name: str) -> Iterator[None]:
    """Hold `root/.name.lock` (an flock, released by the OS if the process dies) for a whole training, so that a
    second training pointed at the same run refuses at once instead of corrupting it."""
    root = Path(root)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".{name}.lock"
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115  held open for the lock's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        if created:
            shutil.rmtree(root, ignore_errors=True)
        raise RunError(f"another training is writing run {name!r}" + (f" (PID {holder})" if holder else ""),
                       path=root / name, hint="wait for it to finish, or choose another --name") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
        if created and not any(root.iterdir()):  # a failed first training leaves no empty runs/ behind
            root.rmdir()


class RunBuilder:
    """Build `root/name` in `root/.name.partial-PID`; `commit()` renames it into place."""

    def __init__(self, root: str | Path, name: str, *, force: bool = False) -> None:
        self.check_target(root, name, force=force)
        self.root = Path(root)
        self.final = self.root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / f".{name}.partial-{os.getpid()}"
        for stale in self.root.glob(f".{name}.partial-*"):  # left by a killed training whose process is gone
            if stale == self.path or not _pid_alive(stale.name.rsplit("-", 1)[-1]):
                shutil.rmtree(stale, ignore_errors=True)
        self.path.mkdir()
        self.force = force

    @staticmethod
    def check_target(root: str | Path, name: str, *, force: bool = False) -> None:
        """Refuse names that escape `root` and existing runs (unless forced), before any work is done."""
        if not name or "/" in name or "\\" in name or name.startswith(".") or name in ("..",):
            raise RunError(f"invalid run name {name!r} (a plain directory name is needed)")
        final = Path(root) / name
        if final.exists() and not force:
            raise RunError("run directory already exists", path=final,
                           hint="choose another --name or pass --force to replace it")

    def __enter__(self) -> RunBuilder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_NAME

    def save_tensors(self, name: str, tensors: dict) -> None:
        from safetensors.torch import save_file
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                  str(self.path / f"{name}.safetensors"))

    def commit(self, config: dict) -> Path:
        """Write config.json last (with checksums), then move the run into place."""
        files = {}
        for file in sorted(self.path.rglob("*")):
            if file.is_file() and not file.name.endswith(("-wal", "-shm")):
                files[str(file.relative_to(self.path))] = sha256_file(file)
        full = {"format_version": RUN_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": _versions(),
                **config, "files": files}
        tmp = self.path / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(full, indent=2, sort_keys=False, default=str), encoding="utf-8")
        os.replace(tmp, self.path / CONFIG_NAME)
        if self.final.exists():
            trash = self.root / f".{self.final.name}.old-{os.getpid()}"
            os.replace(self.final, trash)
            os.replace(self.path, self.final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.path, self.final)
        return self.final
