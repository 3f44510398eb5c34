"""Run untrusted work (parsing and pre-flighting an uploaded model) in a child process under
CPU-time, memory and wall-clock limits.

A model file is data, but reading it is work that the file controls: a few hundred bytes of
ONNX can ask for gigabytes (a Pad, a Concat folded at import) or CPU-hours (a chain of a
thousand convolutions).  ``inspect_untrusted`` does what ``pipeline.inspect`` does, in a fresh
interpreter that is killed when it goes over a limit, so one hostile upload costs at most its
limits and never blocks or exhausts the process that serves everybody else.

The child:

* is a new ``sys.executable`` process (what multiprocessing's "spawn" start method runs),
  never a fork of the caller: it inherits no threads, locks, open sockets, torch state or
  loaded models.  It is started with ``subprocess`` rather than multiprocessing so that its
  environment is a short allow-list: the caller's database and broker URLs, passwords and
  keys never reach the process that parses hostile bytes, and the caller's ``__main__`` is
  not imported again;
* runs at nice 19 (``CHILD_NICENESS``) and torch on one thread (``OMP_NUM_THREADS=1``: one
  upload uses at most one core, and the serving process is scheduled first), with
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` (no pickled code even if a loader forgot
  ``weights_only``) and ``MALLOC_ARENA_MAX=2`` (glibc reserves 64 MiB of address space per
  malloc arena, which an address-space limit would otherwise count);
* imports what the work needs (``preload``) *before* the limits are set, so neither the
  import's CPU time nor its start-up cost counts against the upload; then sets
  ``RLIMIT_CPU`` (its CPU time so far + the limit; SIGXCPU, then SIGKILL 2 s later),
  ``RLIMIT_AS`` (total virtual memory) and ``RLIMIT_CORE`` 0, and runs one job, then exits;
* answers in JSON, never pickle: a child that a model file had somehow taken over cannot run
  code in the caller by the way it answers.

The parent enforces the wall-clock limit (it kills the child) and turns every way the child
can end into either the job's result or a ``ModelRejected`` whose code says which limit was
hit and whose message names the limit, its value and the setting that sets it.  snnconv's own
errors raised in the child arrive as the same class with the same message, code and details;
anything else becomes a generic ``preflight-failed`` (its traceback goes to the child's
stderr, the server log, never to the user).

Costs (measured on the 2-core development machine while a benchmark ran): starting a child
that imports what pre-flight needs (torch, onnx, ``core.ingest``, ``core.graph``) takes about
5.5 s and 5.4 CPU-seconds, and holds 0.7 GiB of virtual / 0.35 GiB resident memory.  To keep
that off the request, ``inspect_untrusted`` keeps one started child in reserve per process
(``prewarm`` starts it early): an upload takes it and a new one starts while the upload is
checked.  With a ready child a small model's pre-flight answers in 0.1-0.5 s (0.03 s in
process); without one, start-up is added.  Each child checks one upload only, so no upload
can leave anything behind for the next; the price is those CPU-seconds per upload.

Why 3 GiB of virtual memory by default: the child starts at 0.7 GiB; pre-flight of a model
needs about 7x its file size more (its bytes, the parsed protobuf, numpy arrays, torch
parameters, the canonical copy; a 187 MiB ONNX MLP peaked at 2.0 GiB), so a file at the
256 MiB upload limit fits in 3 GiB, and the gigabyte-sized allocations hostile files ask for
do not.  Raise ``SNNCONV_PREFLIGHT_MEMORY_MB`` with ``SNNCONV_MAX_UPLOAD_MB``.
"""

from __future__ import annotations

import atexit
import importlib
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ModelRejected, SnnconvError

if TYPE_CHECKING:
    from core.preflight import PreflightReport

CPU_SETTING = "SNNCONV_PREFLIGHT_CPU_SECONDS"
MEMORY_SETTING = "SNNCONV_PREFLIGHT_MEMORY_MB"
TIMEOUT_SETTING = "SNNCONV_PREFLIGHT_TIMEOUT_S"

START_TIMEOUT_S = 300.0
"""How long a child may take to start (import torch) before the sandbox is declared broken;
generous because a busy machine imports torch slowly and this is not the upload's fault."""
REAP_TIMEOUT_S = 5.0
# the lowest priority: under load the API's answers (nice 0) come first; an upload waits
CHILD_NICENESS = 19
MAX_ANSWER_BYTES = 512 * 1024 * 1024
PRELOAD_INSPECT = ("core.ingest", "core.graph", "core.preflight", "torch._dynamo")
"""What ``inspect_untrusted``'s child imports before its limits are set: torch, onnx, and
``torch._dynamo`` (with sympy), which the first fx trace of a model would otherwise import
lazily, taking 2-4 s of the upload's CPU limit."""

_ROOT = str(Path(__file__).resolve().parent.parent)  # the folder that holds ``core``
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME")
_CHILD_ENV = {
    "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}
_BOOT = ("import sys; from core.sandbox import _child_main; "
         "_child_main(int(sys.argv[1]), sys.argv[2:])")
_ALLOCATION_FAILURES = ("can't allocate memory", "not enough memory", "Unable to allocate",
                        "Cannot allocate memory", "std::bad_alloc")


@dataclass(frozen=True)
class Limits:
    """What one sandboxed job may use."""

    cpu_seconds: int = 30
    """CPU time of the job itself (all its threads), start-up excluded."""
    memory_mb: int = 3072
    """Virtual memory (address space) of the whole child, start-up included (see above)."""
    timeout_s: float = 120.0
    """Wall-clock time of the job; covers a child that sleeps or waits instead of computing."""


def inspect_untrusted(model_path: Path | str, arch: str | None = None,
                      limits: Limits | None = None) -> PreflightReport:
    """``pipeline.inspect`` of an uploaded file, in a child process under ``limits``.

    Returns the same ``PreflightReport``; raises the same snnconv errors, or ``ModelRejected``
    (``preflight-cpu-limit``, ``preflight-memory-limit``, ``preflight-timeout``,
    ``preflight-failed``) when the check could not finish within its limits.
    """
    return run(_inspect, str(model_path), arch, limits=limits or Limits(),
               preload=PRELOAD_INSPECT, keep_warm=True)


def prewarm() -> None:
    """Start the child ``inspect_untrusted`` will use, so the first upload does not wait."""
    _keep_spare(PRELOAD_INSPECT)


def _inspect(model_path: str, arch: str | None):
    """In the child: what ``core.pipeline.inspect`` does, without importing the whole
    pipeline (training, datasets, methods: seconds of start-up that pre-flight does not use)."""
    from core.graph import canonicalize, preflight
    from core.ingest import load_model

    loaded = load_model(Path(model_path), arch)
    report = preflight(canonicalize(loaded.module), fmt=loaded.format,
                       input_shape=tuple(loaded.input_shape))
    if any(_is_allocation_failure(problem) for problem in report.problems):
        raise MemoryError  # pre-flight's trial run reports failures as problems; not this one
    return report


def run(function: Callable[..., Any], *args: Any, limits: Limits | None = None,
        preload: tuple[str, ...] = (), keep_warm: bool = False) -> Any:
    """``function(*args)`` in a fresh child process under ``limits``; its result, or its error.

    ``function`` must be a top-level function (it is pickled by name) and its arguments
    picklable; its result must be JSON data or a pydantic model defined in ``core``.
    ``preload`` names modules the child imports before its limits start; with ``keep_warm``
    one such child is kept started for the next call.
    """
    limits = limits or Limits()
    preload = tuple(preload)
    child = _take_child(preload)
    try:
        child.wait_ready()
        child.require_room_for(limits)
        child.conn.send((function, args, limits.cpu_seconds, limits.memory_mb))
        if keep_warm:
            _keep_spare(preload)
        answer = child.answer(limits.timeout_s)
        if answer is None:
            child.close(grace_s=0)
            raise _refusal("preflight-timeout", f"it took longer than {limits.timeout_s:g} s",
                           TIMEOUT_SETTING, limits.timeout_s)
        if answer is _DIED:
            raise _death(child, limits)
    except BaseException:
        child.close(grace_s=0)
        raise
    child.close(grace_s=1)  # it has answered and is exiting
    try:
        return _decode(answer, limits)
    except (TypeError, ValueError, IndexError, ImportError, AttributeError):
        raise _failed("its answer could not be read") from None


# ── the parent's side ─────────────────────────────────────────────────────────────────────

_DIED = object()


class _Child:
    """One started child process and the socket the parent talks to it over."""

    def __init__(self, preload: tuple[str, ...]) -> None:
        parent_end, child_end = socket.socketpair()
        with child_end:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(child_end.fileno()), *preload],
                pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL, env=_child_env(),
                close_fds=True)
        self.conn = Connection(parent_end.detach())
        self.ready = False
        self.start_cpu = 0.0
        self.start_vm = 0
        self.status: int | None = None
        self.rusage: resource.struct_rusage | None = None

    def wait_ready(self) -> None:
        """Wait for the child's imports; a child that cannot start is a server fault."""
        if self.ready:
            return
        message = None
        try:
            if self.conn.poll(START_TIMEOUT_S):
                message = json.loads(self.conn.recv_bytes(1 << 16))
        except (EOFError, OSError, ValueError):
            message = None
        if not (isinstance(message, list) and message[:1] == ["ready"]):
            raise RuntimeError("the pre-flight sandbox process did not start; see its errors "
                               "in the server log")
        self.ready, self.start_vm, self.start_cpu = True, int(message[1]), float(message[2])

    def require_room_for(self, limits: Limits) -> None:
        if limits.memory_mb * 1024 * 1024 < self.start_vm + 64 * 1024 * 1024:
            raise RuntimeError(
                f"{MEMORY_SETTING}={limits.memory_mb} is below what the pre-flight process "
                f"needs just to start ({self.start_vm / 2**20:.0f} MiB of virtual memory)")

    def answer(self, timeout_s: float) -> Any:
        """The child's JSON answer; ``_DIED`` if it ended without one; None on time-out."""
        try:
            if not self.conn.poll(timeout_s):
                return None
            return json.loads(self.conn.recv_bytes(MAX_ANSWER_BYTES))
        except (EOFError, OSError, ValueError):
            return _DIED

    def alive(self) -> bool:
        return self.status is None and self.process.poll() is None

    def close(self, grace_s: float = REAP_TIMEOUT_S) -> None:
        """Make sure the child is gone (killed after ``grace_s``); keep its exit status and
        resource usage."""
        self.conn.close()
        deadline = time.monotonic() + grace_s
        while self.status is None and time.monotonic() < deadline:
            if not self._reap(os.WNOHANG):
                time.sleep(0.01)
        if self.status is None:
            self.process.kill()
            self._reap(0)

    def _reap(self, flags: int) -> bool:
        if self.status is not None:
            return True
        if self.process.returncode is not None:  # reaped by Popen.poll: no rusage
            self.status = self.process.returncode
            return True
        try:
            pid, status, usage = os.wait4(self.process.pid, flags)
        except ChildProcessError:
            self.status = self.process.returncode if self.process.returncode is not None else -1
            return True
        if pid == 0:
            return False
        self.status, self.rusage = os.waitstatus_to_exitcode(status), usage
        self.process.returncode = self.status
        return True

    def job_cpu_seconds(self) -> float | None:
        if self.rusage is None:
            return None
        return self.rusage.ru_utime + self.rusage.ru_stime - self.start_cpu


_spares: dict[tuple[str, ...], _Child] = {}
_spares_lock = threading.Lock()
_spares_pid = os.getpid()


def _take_child(preload: tuple[str, ...]) -> _Child:
    global _spares_pid
    with _spares_lock:
        if _spares_pid != os.getpid():  # a forked copy of the caller: those are not ours
            _spares.clear()
            _spares_pid = os.getpid()
        spare = _spares.pop(preload, None)
    if spare is not None and spare.alive():
        return spare
    if spare is not None:
        spare.close()
    return _Child(preload)


def _keep_spare(preload: tuple[str, ...]) -> None:
    with _spares_lock:
        if preload in _spares:
            return
        try:
            _spares[preload] = _Child(preload)
        except OSError:  # out of processes or files: the next call starts its own
            pass


@atexit.register
def close_spares() -> None:
    """Stop the children kept in reserve (at exit; tests may call it too)."""
    with _spares_lock:
        spares = list(_spares.values())
        _spares.clear()
    for spare in spares:
        spare.close(grace_s=0)  # it has done nothing yet: nothing to wait for


def _child_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key in _PASSED_ENV or key.startswith("NUMBA_CACHE")}
    paths = [_ROOT, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    env.update(_CHILD_ENV)
    return env


def _refusal(code: str, what: str, setting: str, value: float,
             why: str = "too costly") -> ModelRejected:
    return ModelRejected(f"pre-flight stopped: {what} ({setting}); the model is {why} to check",
                         code=code, details={"limit": value, "setting": setting})


def _cpu_refusal(limits: Limits) -> ModelRejected:
    return _refusal("preflight-cpu-limit",
                    f"it used more than {limits.cpu_seconds} s of CPU time", CPU_SETTING,
                    limits.cpu_seconds)


def _memory_refusal(limits: Limits) -> ModelRejected:
    return _refusal("preflight-memory-limit",
                    f"it needed more than {limits.memory_mb} MiB of memory", MEMORY_SETTING,
                    limits.memory_mb, why="too large")


def _failed(what: str) -> ModelRejected:
    return ModelRejected(f"pre-flight could not check the model: {what}",
                         code="preflight-failed")


def _death(child: _Child, limits: Limits) -> ModelRejected:
    """Why a child ended without answering: its CPU limit (SIGXCPU, or SIGKILL at the hard
    limit), or something else (reported without detail)."""
    child.close()
    used = child.job_cpu_seconds()
    over_cpu = used is not None and used >= limits.cpu_seconds - 0.5
    if child.status == -signal.SIGXCPU or (child.status == -signal.SIGKILL and over_cpu):
        return _cpu_refusal(limits)
    return _failed("its process stopped unexpectedly")


def _decode(answer: Any, limits: Limits) -> Any:
    kind = answer[0] if isinstance(answer, list) and answer else None
    if kind == "json":
        return answer[1]
    if kind == "model":
        return _model_class(answer[1], answer[2]).model_validate_json(answer[3])
    if kind == "memory":
        raise _memory_refusal(limits)
    if kind == "error":
        raise _snnconv_error(*answer[1:])
    if kind == "failed":
        raise _failed(f"it failed with an internal error ({answer[1]})")
    raise _failed("its answer could not be read")


def _core_class(module: str, qualname: str, base: type) -> type:
    """A class of snnconv's ``core`` by name, only if it is a subclass of ``base``."""
    if not (module == "core" or module.startswith("core.")) or "." in qualname:
        raise _failed("its answer could not be read")
    found = getattr(importlib.import_module(module), qualname, None)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise _failed("its answer could not be read")
    return found


def _model_class(module: str, qualname: str) -> type:
    from pydantic import BaseModel

    return _core_class(module, qualname, BaseModel)


def _snnconv_error(module: str, qualname: str, message: str, code: str,
                   details: dict) -> SnnconvError:
    cls = _core_class(module, qualname, SnnconvError)
    error = cls.__new__(cls)
    Exception.__init__(error, message)  # the message as raised, whatever __init__ takes
    error.code, error.details = code, details
    return error


# ── the child's side ──────────────────────────────────────────────────────────────────────

def _child_main(fd: int, preload: list[str]) -> None:
    """The child: import ``preload``, say it is ready, run one job under its limits, answer."""
    conn = Connection(fd)
    try:
        os.nice(CHILD_NICENESS)  # the serving process, and its answers to everyone, first
    except OSError:
        pass
    for name in preload:
        importlib.import_module(name)
    _one_thread()
    used = resource.getrusage(resource.RUSAGE_SELF)
    conn.send_bytes(_encode(["ready", _virtual_memory_bytes(),
                             used.ru_utime + used.ru_stime]))
    try:
        function, args, cpu_seconds, memory_mb = conn.recv()  # from the parent: trusted
    except (EOFError, OSError):
        return  # a spare the parent no longer needs
    _set_limits(cpu_seconds, memory_mb)
    conn.send_bytes(_run_job(function, args))
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # nothing to clean up: skip seconds of interpreter shutdown with torch loaded


def _one_thread() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or parallel work already started
            pass


def _virtual_memory_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _set_limits(cpu_seconds: int, memory_mb: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime + cpu_seconds)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, _within_hard(resource.RLIMIT_CPU, soft, soft + 2))
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, _within_hard(resource.RLIMIT_AS, memory, memory))


def _within_hard(which: int, soft: int, hard: int) -> tuple[int, int]:
    current = resource.getrlimit(which)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    return soft, hard


def _run_job(function: Callable[..., Any], args: tuple) -> bytes:
    outcome: list
    try:
        result = function(*args)
        outcome = _result(result)
        del result
    except SnnconvError as error:
        outcome = (["memory"] if _is_allocation_failure(str(error)) else
                   ["error", type(error).__module__, type(error).__qualname__, str(error),
                    error.code, error.details])
    except MemoryError:
        outcome = ["memory"]
    except BaseException as error:  # noqa: BLE001 - whatever it is, the user gets no detail
        if _is_allocation_failure(str(error)):
            outcome = ["memory"]
        else:
            traceback.print_exc()
            outcome = ["failed", type(error).__name__]
    try:
        return _encode(outcome)
    except MemoryError:
        return _encode(["memory"])


def _result(result: Any) -> list:
    model_dump_json = getattr(result, "model_dump_json", None)
    if callable(model_dump_json):
        cls = type(result)
        return ["model", cls.__module__, cls.__qualname__, model_dump_json()]
    return ["json", result]


def _encode(message: list) -> bytes:
    return json.dumps(message, default=str).encode()


def _is_allocation_failure(text: str) -> bool:
    return any(marker in text for marker in _ALLOCATION_FAILURES)
