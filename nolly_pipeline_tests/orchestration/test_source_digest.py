"""source_digest: changes exactly when the code a zygote would preload changes."""

from __future__ import annotations

import os
from pathlib import Path

from nolly_pipeline.orchestration.source_digest import source_digest


def _package(root: Path) -> Path:
    package = root / "digest_pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "jobs.py").write_text("VALUE = 1\n")
    return package


def _later(path: Path) -> None:
    """Move the modification time on, as an editor's save a moment later would."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_the_digest_is_stable_while_nothing_changes(tmp_path: Path) -> None:
    _package(tmp_path)
    first = source_digest(["digest_pkg.sub.jobs"], str(tmp_path))
    assert first is not None and first == source_digest(["digest_pkg.sub.jobs"], str(tmp_path))


def test_an_edit_or_a_new_file_changes_the_digest(tmp_path: Path) -> None:
    package = _package(tmp_path)
    before = source_digest(["digest_pkg"], str(tmp_path))
    (package / "sub" / "jobs.py").write_text("VALUE = 2\n")
    _later(package / "sub" / "jobs.py")
    edited = source_digest(["digest_pkg"], str(tmp_path))
    (package / "sub" / "more.py").write_text("")
    added = source_digest(["digest_pkg"], str(tmp_path))
    assert len({before, edited, added}) == 3


def test_bytecode_caches_do_not_count(tmp_path: Path) -> None:
    package = _package(tmp_path)
    before = source_digest(["digest_pkg"], str(tmp_path))
    (package / "sub" / "__pycache__").mkdir()
    (package / "sub" / "__pycache__" / "jobs.cpython-311.pyc").write_bytes(b"\0")
    assert source_digest(["digest_pkg"], str(tmp_path)) == before


def test_a_module_file_outside_a_package_is_covered(tmp_path: Path) -> None:
    module = tmp_path / "single_module.py"
    module.write_text("")
    before = source_digest(["single_module"], str(tmp_path))
    module.write_text("X = 1\n")
    assert before is not None and source_digest(["single_module"], str(tmp_path)) != before


def test_unlocatable_code_has_no_digest(tmp_path: Path) -> None:
    (tmp_path / "namespace_only").mkdir()  # no __init__.py: a namespace package
    assert source_digest(["no_such_module_here"], str(tmp_path)) is None
    assert source_digest(["namespace_only.jobs"], str(tmp_path)) is None
