"""`python -m services.jobs.supervise OWNER_PID GRACE -- COMMAND...`: a local job's watchdog.

The local trainer backend starts this as the leader of a new process group; it runs COMMAND
in the same group and exits with its exit status. When its owner (OWNER_PID) is gone — killed,
crashed, exited — or when it gets SIGTERM/SIGINT, it ends the whole group: SIGTERM, then
SIGKILL after GRACE seconds. So a trainer, and whatever it started, never outlives the process
that launched it. (It polls its parent instead of PR_SET_PDEATHSIG, which fires when the
forking *thread* ends, not the process.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

POLL_SECONDS = 0.25


def end_group(child: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the group (this process ignores it), SIGKILL to what is left after grace."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(os.getpgrp(), signal.SIGTERM)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.killpg(os.getpgrp(), signal.SIGKILL)  # ends this process too


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m services.jobs.supervise OWNER GRACE -- COMMAND...", file=sys.stderr)
        return 2
    owner, grace, command = int(argv[0]), float(argv[1]), argv[3:]
    stop: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if os.getppid() != owner:
        return 143  # the owner ended before we started
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"cannot start {command[0]}: {exc}", file=sys.stderr)
        return 127
    while True:
        try:
            code = child.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            if stop or os.getppid() != owner:
                end_group(child, grace)
            continue
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)  # leftovers of the trainer go with it
        if code < 0:  # pass the signal on, so the owner sees what ended the trainer
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
