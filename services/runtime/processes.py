"""Child processes that end with their owner, on every exit path (SIGKILL of the owner too).

`spawn_tied` arms Linux's parent-death signal (prctl PR_SET_PDEATHSIG) in the child before it
runs its program, so the kernel signals the child when the owner dies, however it dies. The
arming is done by a few lines of Python that then exec the program (the signal survives
exec): no preexec_fn, whose fork() is unsafe beside threads and makes gRPC complain. The
signal fires when the *thread* that started the child ends, not the process; so the child is
started on a keeper thread that lives exactly as long as the child (it waits for it), and a
child started from a short-lived worker thread is not killed when that thread ends.

Elsewhere than Linux there is no such signal: children end on the owner's orderly exit paths
(close, stop, atexit) only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

# argv: death signal, owner pid, program, args... (-I -S: no site, no user paths: fast, inert)
_ARM_AND_EXEC = r"""
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[1]), 0, 0, 0) != 0:
    os._exit(127)
if os.getppid() != int(sys.argv[2]):
    os._exit(1)
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as exc:
    sys.stderr.write(f"cannot run {sys.argv[3]}: {exc.strerror}\n")
    os._exit(127)
"""


def tied_command(args: Sequence[str], death_signal: int = signal.SIGTERM) -> list[str]:
    """`args` behind the arming prelude (as is where there is no parent-death signal)."""
    if not sys.platform.startswith("linux"):
        return list(args)
    prelude = [sys.executable, "-I", "-S", "-c", _ARM_AND_EXEC]
    return [*prelude, str(int(death_signal)), str(os.getpid()), *args]


def spawn_tied(
    args: Sequence[str],
    *,
    death_signal: int = signal.SIGTERM,
    name: str = "child",
    **popen_kwargs: Any,
) -> subprocess.Popen[bytes]:
    """Start `args` as a child that receives `death_signal` when this process dies.

    `popen_kwargs` go to subprocess.Popen (stdout, env, start_new_session...). The keeper
    thread reaps the child; Popen.poll()/wait() keep working from any thread.
    """
    command = tied_command(args, death_signal)
    started: Future[subprocess.Popen[bytes]] = Future()

    def keep() -> None:
        try:
            child = subprocess.Popen(command, **popen_kwargs)
        except BaseException as exc:  # e.g. the program does not exist
            started.set_exception(exc)
            return
        started.set_result(child)
        child.wait()  # this thread's life anchors the child's death signal

    threading.Thread(target=keep, name=f"keeper-{name}", daemon=True).start()
    return started.result()


def stop_process(child: subprocess.Popen[Any], timeout: float, sig: int = signal.SIGTERM) -> int:
    """Send `sig`, wait up to `timeout` seconds, then SIGKILL; returns the exit code."""
    if child.poll() is None:
        child.send_signal(sig)
    return wait_or_kill(child, timeout)


def wait_or_kill(child: subprocess.Popen[Any], timeout: float) -> int:
    """Wait up to `timeout` seconds for a child already asked to stop, then SIGKILL it.

    Never signals again before the kill: a second SIGTERM that lands after a service's event
    loop has closed (and restored the default handler) would kill a clean shutdown midway.
    """
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
    return child.wait()


def kill_group(child: subprocess.Popen[Any]) -> None:
    """SIGKILL what is left of the process group a child led (start_new_session=True):
    its own children, orphaned when it died abruptly."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
