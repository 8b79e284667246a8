"""The two images of ``docker/Dockerfile`` without Docker: what each stage sets, copies and runs.

The topology test reads the Dockerfile instead of repeating it: the ``dagster`` stage's pip
pins build a virtual environment of its own (cached by the pins' hash), each stage's ``ENV``,
``WORKDIR``, ``COPY`` and ``CMD`` shape the process that stands in for its container.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nolly_pipeline_tests.deploy.conftest import DOCKER_DIR

DOCKERFILE = DOCKER_DIR / "Dockerfile"
VENV_CACHE = Path.home() / ".cache" / "nolly-pipeline"


@dataclass
class Stage:
    """One ``FROM ... AS name`` stage, with what it inherits from its parent stage."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    pip_installs: list[list[str]] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), value)


def stages() -> dict[str, Stage]:
    """Every named stage of the Dockerfile, ENV and WORKDIR inherited from ``FROM <stage>``."""
    result: dict[str, Stage] = {}
    stage: Stage | None = None
    for instruction, args in _instructions(DOCKERFILE.read_text()):
        if instruction == "FROM":
            match = re.match(r"(\S+)\s+AS\s+(\S+)", args, re.IGNORECASE)
            assert match, f"unnamed stage: FROM {args}"
            parent = result.get(match.group(1))
            stage = Stage(
                match.group(2),
                env=dict(parent.env) if parent else {},
                workdir=parent.workdir if parent else "/",
            )
            result[stage.name] = stage
        elif stage is None:
            continue
        elif instruction == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                stage.env[key] = _expand(value, stage.env)
        elif instruction == "WORKDIR":
            stage.workdir = _expand(args, stage.env)
        elif instruction == "COPY":
            *sources, dest = shlex.split(args)
            stage.copies.append(([s for s in sources if not s.startswith("--")], _expand(dest, stage.env)))
        elif instruction == "RUN" and re.match(r"pip install\s", args):
            command = shlex.split(args.split("&&", 1)[0])
            stage.pip_installs.append(command[2:])
        elif instruction == "CMD":
            stage.cmd = json.loads(args)
    return result


def dagster_pins() -> list[str]:
    """The requirements the ``dagster`` image installs, exactly as the Dockerfile lists them."""
    (pins,) = stages()["dagster"].pip_installs
    return pins


def dagster_only_venv() -> Path:
    """A virtual environment built from the ``dagster`` stage's pins alone: no nolly_pipeline.

    Cached under ``~/.cache/nolly-pipeline/topology-venv-<hash of pins and Python>``; a file
    lock lets parallel sessions share one build. Returns the environment's ``bin`` folder.
    """
    pins = dagster_pins()
    key = hashlib.sha256(json.dumps([pins, sys.version_info[:2]]).encode()).hexdigest()[:12]
    venv = VENV_CACHE / f"topology-venv-{key}"
    done = venv / ".complete"
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VENV_CACHE / f"topology-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            # The system interpreter, not this session's venv: nothing of ours leaks in.
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
            install = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pins], capture_output=True, text=True,
            )
            assert install.returncode == 0, f"pip install {pins} failed:\n{install.stderr[-3000:]}"
            done.write_text("\n".join(pins) + "\n")
    return venv / "bin"
