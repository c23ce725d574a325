"""The verifier's worker processes: a light entry point that never imports the caller's code.

    python -m astro_core.answers.worker CONTROL_FD

starts a *zygote*. It imports only the checking code (sympy, the LaTeX parser, warmed up by
`warmup`), then waits on its control socket. For each "spawn" request it forks a worker that
inherits that warm state and is ready in milliseconds; for each "kill" request it kills and
reaps one of its workers. When the control socket closes (the pool closed, or the process
that owns it died) the zygote kills its workers and exits.

Why not `multiprocessing`: its spawn and forkserver children re-run the caller's main script
(as `__mp_main__`), so a script that imports torch or transformers made every worker take
seconds to start. Here nothing of the caller is imported, whatever it imported itself.

Control messages are pickled tuples on a SOCK_SEQPACKET socket (one message per packet):
  pool -> zygote: ("spawn", config_json) with the worker's socket as an attached fd,
                  ("kill", pid)
  zygote -> pool: ("zygote-ready", pid) once, then ("spawned", pid) / ("killed", pid)
A worker talks to the pool on its own socket (a multiprocessing Connection): it sends
("ready", pid) first, then one Verdict per item as soon as each is decided.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
import sys
from multiprocessing.connection import Connection

from astro_core.answers.pool import CONTROL_PACKET_BYTES

MEMORY_LIMIT_BYTES = 4 * 1024**3
_PR_SET_PDEATHSIG = 1


def worker_loop(conn: Connection, config_json: str) -> None:
    """Serve one pool connection: (settings_json | None, items) in, one Verdict per item
    out; None or a closed connection ends it."""
    from astro_core.answers.config import VerifierConfig
    from astro_core.answers.verify import Verdict, check

    default = VerifierConfig.model_validate_json(config_json)
    settings: dict[str, VerifierConfig] = {}
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        settings_json, items = message
        config = default
        if settings_json is not None:
            if settings_json not in settings:
                settings[settings_json] = VerifierConfig.model_validate_json(settings_json)
            config = settings[settings_json]
        for item in items:
            try:
                verdict = check(item, config)
            except BaseException as exc:  # noqa: BLE001 - any failure is a verdict, not a crash
                verdict = Verdict(False, "", f"error: {type(exc).__name__}: {exc}"[:300])
            try:
                conn.send(verdict)
            except (OSError, ValueError):
                return


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the zygote dies (Linux); elsewhere the closed connection
    ends an idle worker and the zygote kills busy ones on its way out."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the zygote died before prctl took effect
        os._exit(0)


def _limit_memory() -> None:
    try:
        import resource

        # A runaway sympy computation raises MemoryError instead of exhausting the node.
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass


def _run_worker(control: socket.socket, worker_fd: int, config_json: str, zygote: int) -> None:
    """In the forked child: never returns."""
    code = 0
    try:
        control.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_parent(zygote)
        _limit_memory()
        worker_loop(Connection(worker_fd), config_json)
    except BaseException:  # noqa: BLE001 - a worker must never return into the zygote's loop
        code = 1
    finally:
        os._exit(code)


def _send(control: socket.socket, message: tuple[str, int]) -> None:
    control.send(pickle.dumps(message))


def serve(control: socket.socket) -> None:
    """The zygote's loop: fork workers and kill them on request until the socket closes."""
    children: set[int] = set()
    _send(control, ("zygote-ready", os.getpid()))
    try:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(control, CONTROL_PACKET_BYTES, 1)
            except (ConnectionError, OSError):
                return
            if not data:
                for fd in fds:
                    os.close(fd)
                return
            command, argument = pickle.loads(data)
            if command == "spawn":
                [worker_fd] = fds
                pid = os.fork()
                if pid == 0:
                    _run_worker(control, worker_fd, argument, os.getppid())
                os.close(worker_fd)
                children.add(pid)
                _send(control, ("spawned", pid))
            elif command == "kill":
                if argument in children:
                    _kill(argument)
                    children.discard(argument)
                _send(control, ("killed", argument))
    finally:
        for pid in children:
            _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    # Ctrl-C reaches the caller, which closes the pool; the workers must not print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import astro_core.answers.warmup  # noqa: F401 - sympy, the parser and its warm tables

    serve(control)
    os._exit(0)  # nothing to flush; skip tearing down sympy's modules


if __name__ == "__main__":
    main()
