"""A digest of the code a zygote preloads, so a zygote is replaced exactly when that code changes.

The daemon refreshes its workspace every 60 s (``dagster._daemon.controller``), and each refresh
starts a new code server with a new server id whether or not anything changed. Keying zygotes
by that id started a new zygote, and paid its preload (2-3 CPU-seconds here), every minute.
The digest changes when a file of a preloaded package is edited, added or removed, and when a
package is installed or removed (the library directories' modification times), which is what
a forked worker would otherwise run stale.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from importlib.machinery import PathFinder


def source_digest(modules: Iterable[str], working_directory: str) -> str | None:
    """Digest of the files ``modules`` load from, as a process started in ``working_directory``
    with ``python -m`` finds them; None when one cannot be located (a namespace package, a
    module only a custom importer knows), and the caller must not rely on the digest."""
    search_path = [working_directory, *sys.path[1:]]
    digest = hashlib.sha256()
    for top in sorted({module.split(".")[0] for module in modules}):
        locations = _locations(top, search_path)
        if locations is None:
            return None
        for path in locations:
            _add_tree(digest, path)
    for directory in _library_directories(search_path):
        _add_stat(digest, directory)
    return digest.hexdigest()


def _locations(top: str, search_path: Sequence[str]) -> list[str] | None:
    """The package's directories, or the module's file, without importing anything."""
    spec = PathFinder.find_spec(top, list(search_path))
    if spec is None:
        return None
    if spec.submodule_search_locations is not None:
        if spec.origin is None:  # a namespace package: spread over unknown directories
            return None
        return list(spec.submodule_search_locations)
    return [spec.origin] if spec.origin else None


def _add_tree(digest: "hashlib._Hash", path: str) -> None:
    if os.path.isfile(path):
        _add_stat(digest, path)
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            _add_stat(digest, os.path.join(root, name))


def _library_directories(search_path: Sequence[str]) -> list[str]:
    """Installed-package directories (``site-packages``): an install or removal changes their
    modification time, as it adds or removes an entry."""
    return [p for p in search_path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


def _add_stat(digest: "hashlib._Hash", path: str) -> None:
    try:
        stat = os.stat(path)
    except OSError:  # removed while we walked: the next digest will differ anyway
        return
    digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
