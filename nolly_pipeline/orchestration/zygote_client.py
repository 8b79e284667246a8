"""The launcher's side of a zygote (:mod:`.zygote`): start it, ask it for forks, hear of exits.

Used by :class:`.launcher.PreforkRunLauncher` in the daemon (and the webserver), never in the
zygote or its workers.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from dataclasses import dataclass
from typing import IO, Any, Callable, Sequence

from dagster import get_dagster_logger

READY_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class ZygoteKey:
    """What a zygote's preloaded modules depend on: a different one needs a different zygote."""

    executable: str
    working_directory: str
    module: str | None  # the code location's module, None for a python_file location
    code: str  # digest of the preloaded sources (:mod:`.source_digest`), else the server's id


class Zygote:
    """One zygote process: started on first use, asked to fork one worker per run.

    A reader thread takes its output: answers to fork requests go to the waiting launch,
    and each ``exited`` notice to ``on_exit(pid, status)``."""

    def __init__(self, key: ZygoteKey, preload: Sequence[str], on_exit: Callable[[int, int], None]):
        modules = [*([key.module] if key.module else []), *preload]
        self.process = subprocess.Popen(
            [key.executable, "-m", "nolly_pipeline.orchestration.zygote", *modules],
            cwd=key.working_directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lock = threading.Lock()
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._on_exit = on_exit
        threading.Thread(target=self._read, name=f"zygote-{self.process.pid}", daemon=True).start()
        ready = self._answer(READY_TIMEOUT_SECONDS)
        self.failed_preloads: list[str] = list(ready.get("failed", []))
        for failure in self.failed_preloads:
            # Only a cost: the worker imports it itself (and reports a real error there).
            get_dagster_logger().warning(f"run worker zygote could not preload {failure}")

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            message = json.loads(line)
            if "exited" in message:
                try:
                    self._on_exit(int(message["exited"]), int(message["status"]))
                except Exception as exc:  # noqa: BLE001 - keep reading: launches wait on this thread
                    get_dagster_logger().warning(f"could not check the run of an exited worker: {exc!r}")
            else:
                self._answers.put(message)
        self._answers.put({})  # end of output: the zygote is gone

    def _answer(self, timeout: float) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            answer = {}
        if not answer:
            self.close()
            raise RuntimeError(f"run worker zygote did not answer (exit code {self.process.poll()})")
        return answer

    def fork(self, execute_run_args: str) -> int:
        with self.lock:
            stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
            stdin.write(json.dumps({"execute_run_args": execute_run_args}) + "\n")
            stdin.flush()
            return int(self._answer(30)["pid"])

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """End the zygote (end of its stdin); the runs it forked carry on."""
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def is_forked_worker(pid: int) -> bool:
    """Whether ``pid`` is still a worker forked from a zygote (it keeps the zygote's command
    line); where there is no /proc, whether it is alive at all."""
    if not os.path.isdir("/proc"):
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"nolly_pipeline.orchestration.zygote" in cmdline.read()
    except OSError:
        return False
