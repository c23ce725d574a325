"""Hostile inputs return within the time limit and leave the pool healthy; workers start
clean whatever the caller imported; cancelled work stops; no process outlives its owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from astro_core.answers import VerifierConfig, VerifierPool
from astro_core.answers.pool import VerificationCancelled
from astro_core.protocols import RewardMapping, Verifier, VerifyItem

REPO = Path(__file__).resolve().parents[2]
# An item sympy cannot finish (it computes (10^8)!): it always runs into the time limit.
STUCK = VerifyItem(r"\boxed{(10^{8})!}", r"(10^{8})! + 1")

ADVERSARIAL = [
    VerifyItem(r"\boxed{9^{9^{9^{9^{9}}}}}", "9"),
    VerifyItem("x" * 1_000_000 + r" so \boxed{4}", "4"),
    VerifyItem(r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "1"),
    VerifyItem("\\boxed{" * 3000 + "1", "1"),
    VerifyItem(r"\boxed{__import__('os').system('id')}", "0"),
    VerifyItem(r"\boxed{\frac{1}{\sqrt{}}^{\left(} \begin{pmatrix} & \\ \end{array}}", "1"),
    VerifyItem("the answer is \x00\\boxed{3\x00}", "3"),
    VerifyItem(b"\\boxed{5} \xff\xfe\xc3".decode("utf-8", "surrogateescape"), "5"),
    VerifyItem(r"\boxed{(10^{8})!}", "1"),
    VerifyItem(r"\boxed{" + "+".join(["x"] * 3000) + "}", "3000x"),
]


def test_pool_is_a_verifier(pool: VerifierPool) -> None:
    assert isinstance(pool, Verifier)


def test_adversarial_inputs_return_and_pool_stays_healthy() -> None:
    limit = 10.0
    with VerifierPool(VerifierConfig(workers=2, timeout_seconds=limit)) as pool:
        started = time.monotonic()
        verdicts = pool.check_batch(ADVERSARIAL)
        elapsed = time.monotonic() - started
        # Each item is bounded by the limit; two workers share the batch.
        assert elapsed < limit * len(ADVERSARIAL)
        assert len(verdicts) == len(ADVERSARIAL)
        assert not verdicts[0].correct  # a power tower is not 9
        assert verdicts[1].correct  # the tail of a 1 MB response is kept
        assert not verdicts[4].correct
        assert verdicts[6].correct and verdicts[7].correct  # NUL and non-UTF-8 bytes
        for verdict in verdicts:
            assert verdict.reason in {"equal", "not equal", "no answer", "timeout"} or (
                verdict.reason.startswith("error")
            )
        assert pool.alive_workers() == 2
        assert [v.correct for v in pool.check_batch([VerifyItem(r"\boxed{2}", "2")] * 4)] == [
            True
        ] * 4


def test_stuck_worker_is_killed_and_replaced() -> None:
    """An item that runs past the limit comes back as a timeout; the batch continues."""
    stuck = STUCK
    with VerifierPool(VerifierConfig(workers=1, timeout_seconds=0.5)) as pool:
        verdicts = pool.check_batch([stuck, VerifyItem(r"\boxed{2}", "2")])
        assert verdicts[0].reason == "timeout" and not verdicts[0].correct
        assert pool.timeouts == 1 and pool.replaced == 1
        assert verdicts[1].correct  # the replacement worker took the next item
        assert pool.alive_workers() == 1
        result = pool.verify_batch([stuck])[0]
        assert (result.correct, result.reward, result.reason) == (False, -1.0, "timeout")


def test_results_keep_input_order(pool: VerifierPool) -> None:
    items = [VerifyItem(rf"\boxed{{{n}}}", str(n)) for n in range(50)]
    items[7] = VerifyItem(r"\boxed{8}", "7")
    verdicts = pool.check_batch(items)
    assert [v.extracted for v in verdicts] == [str(n if n != 7 else 8) for n in range(50)]
    assert [v.correct for v in verdicts] == [n != 7 for n in range(50)]


def test_timeout_inside_a_chunk_keeps_the_rest_of_the_chunk() -> None:
    """Items travel in chunks; a stuck item still gets its own limit, and the items after it
    in the same chunk are checked by the replacement worker."""
    stuck = STUCK
    items = [VerifyItem(rf"\boxed{{{n}}}", str(n)) for n in range(12)]
    items[4] = stuck  # 12 items, 1 worker: chunks of 3, the stuck one in the middle
    with VerifierPool(VerifierConfig(workers=1, timeout_seconds=0.5)) as pool:
        verdicts = pool.check_batch(items)
        assert [v.reason for v in verdicts] == ["equal"] * 4 + ["timeout"] + ["equal"] * 7
        assert [v.extracted for v in verdicts[5:]] == [str(n) for n in range(5, 12)]
        assert pool.timeouts == 1 and pool.replaced == 1 and pool.alive_workers() == 1


def test_per_call_settings(pool: VerifierPool) -> None:
    """check_batch(items, settings) overrides the answer settings for that call only."""
    from astro_core.answers import VerifierConfig

    item = VerifyItem("we get 3 and then 4 apples", "4")
    strict = pool.config.model_copy(update={"fallback": "none"})
    assert pool.check_batch([item])[0].correct  # default fallback: the last number
    assert pool.check_batch([item], strict)[0].reason == "no answer"
    assert pool.check_batch([item])[0].correct  # the pool's own settings are unchanged
    assert isinstance(strict, VerifierConfig)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_workers_start_clean_when_the_caller_imported_torch(tmp_path: Path) -> None:
    """Regression: spawn/forkserver workers re-ran the caller's script, so a script that
    imports torch and transformers made each worker slow to start, and the start counted
    against the 1 s limit of the shared pool: `\\frac{1}{2}` vs itself came back timeout.
    Workers now start from a light entry point and an item is timed from a ready worker."""
    marker = tmp_path / "imports.txt"
    script = tmp_path / "heavy_caller.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json
            import torch  # noqa: F401 - a heavy module-level import, as training scripts do
            import transformers  # noqa: F401

            with open({str(marker)!r}, "a") as f:  # once per process that runs this file
                f.write("imported\\n")

            from astro_core.answers import VerifierConfig, VerifierPool, shared_pool
            from astro_core.protocols import VerifyItem

            if __name__ == "__main__":
                half = VerifyItem(r"\\frac{{1}}{{2}}", r"\\frac{{1}}{{2}}")
                trivial = [half, VerifyItem("2", "2"), VerifyItem("x+1", "1+x")]
                reasons = [shared_pool().check(half).reason for _ in range(3)]
                with VerifierPool(VerifierConfig(workers=2, timeout_seconds=1.0)) as pool:
                    reasons += [v.reason for v in pool.check_batch(trivial * 4)]
                print(json.dumps(reasons))
            """
        )
    )
    run = subprocess.run(
        [sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == ["equal"] * 15
    assert marker.read_text().splitlines() == ["imported"]  # no worker re-ran the script


def test_cancel_drops_the_request_and_frees_the_workers() -> None:
    """A caller that gives up (cancel) gets VerificationCancelled at once: queued items are
    dropped and workers busy with its items are replaced, so the next small call answers
    within one item limit instead of waiting for the abandoned work."""
    limit = 5.0
    with VerifierPool(VerifierConfig(workers=2, timeout_seconds=limit)) as pool:
        cancel = threading.Event()
        outcome: list[object] = []

        def abandoned() -> None:
            try:
                outcome.append(pool.check_batch([STUCK] * 40, cancel=cancel))
            except VerificationCancelled as exc:
                outcome.append(exc)

        caller = threading.Thread(target=abandoned)
        caller.start()
        time.sleep(1.0)  # both workers are inside stuck items now
        cancel.set()
        caller.join(timeout=limit)
        assert not caller.is_alive()
        assert isinstance(outcome[0], VerificationCancelled)
        started = time.monotonic()
        verdicts = pool.check_batch([VerifyItem(r"\boxed{2}", "2")] * 4)
        assert time.monotonic() - started < limit  # 40 stuck items would hold it 100 s
        assert [v.reason for v in verdicts] == ["equal"] * 4
        assert pool.cancelled == 1 and pool.timeouts == 0 and pool.alive_workers() == 2


def test_cancel_before_start_and_other_requests_keep_going() -> None:
    """A request cancelled while queued never reaches a worker; a request beside it in
    the queue is served in full."""
    with VerifierPool(VerifierConfig(workers=1, timeout_seconds=5)) as pool:
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(VerificationCancelled):
            pool.check_batch([STUCK] * 3, cancel=cancel)
        items = [VerifyItem(rf"\boxed{{{n}}}", str(n)) for n in range(20)]
        assert all(v.correct for v in pool.check_batch(items))
        assert pool.timeouts == 0 and pool.replaced == 0


def test_small_requests_are_not_stuck_behind_a_big_one() -> None:
    """Chunks of concurrent requests are taken in turn, so a small request finishes while
    a big one (many slow items) is still running."""
    with VerifierPool(VerifierConfig(workers=1, timeout_seconds=0.5)) as pool:
        big_done = threading.Event()

        def big() -> None:
            pool.check_batch([STUCK] * 8)  # 8 timeouts, chunks of 2: 4 s of work
            big_done.set()

        threading.Thread(target=big, daemon=True).start()
        time.sleep(0.2)
        assert pool.check(VerifyItem(r"\boxed{1}", "1")).correct
        assert not big_done.is_set()
        assert big_done.wait(30)


def test_a_chunk_of_stuck_items_gives_way_after_each_timeout() -> None:
    """Regression: a chunk of stuck items held its worker for one time limit per item (a
    chunk of 6 here: 6 timeouts) before a small request got its turn; now the rest of a
    chunk queues again after a timeout, so the small one waits for one at most. Counted in
    timeouts, not seconds: the machine's load does not change the count."""
    with VerifierPool(VerifierConfig(workers=1, timeout_seconds=0.5)) as pool:
        big = threading.Thread(target=pool.check_batch, args=([STUCK] * 24,), daemon=True)
        big.start()  # 1 worker, 24 items: chunks of 6
        time.sleep(0.2)
        assert pool.check(VerifyItem(r"\boxed{1}", "1")).correct
        assert pool.timeouts <= 2, pool.timeouts
        big.join(60)
        assert not big.is_alive() and pool.timeouts == 24


def test_non_finite_rewards_are_refused(pool: VerifierPool) -> None:
    item = VerifyItem(r"\boxed{1}", "1")
    for rewards in (RewardMapping(float("nan"), 0.0), RewardMapping(1.0, float("-inf"))):
        with pytest.raises(ValueError, match="finite"):
            pool.verify_batch([item], rewards)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_gone(pids: list[int], seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [pid for pid in pids if not _gone(pid)]
        if not left:
            return []
        time.sleep(0.1)
    return left


def test_close_ends_the_workers_and_their_zygote() -> None:
    pool = VerifierPool(VerifierConfig(workers=2, timeout_seconds=5))
    pids = [*pool.worker_pids(), pool.zygote_pid()]
    assert pool.check(VerifyItem("1", "1")).correct
    pool.close()
    assert _wait_gone(pids) == []
    with pytest.raises(RuntimeError, match="closed"):
        pool.check(VerifyItem("1", "1"))


def test_no_worker_outlives_a_killed_owner(tmp_path: Path) -> None:
    """SIGKILL of the process that owns a pool (no cleanup runs) still ends the zygote and
    every worker, also one busy with a stuck item."""
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys, threading
            from astro_core.answers import VerifierConfig, VerifierPool
            from astro_core.protocols import VerifyItem

            pool = VerifierPool(VerifierConfig(workers=2, timeout_seconds=600))
            stuck = VerifyItem(r"\\boxed{(10^{8})!}", r"(10^{8})! + 1")
            threading.Thread(target=pool.check_batch, args=([stuck],), daemon=True).start()
            print(json.dumps([*pool.worker_pids(), pool.zygote_pid()]), flush=True)
            threading.Event().wait()
            """
        )
    )
    owner = subprocess.Popen(
        [sys.executable, str(script)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        assert len(pids) == 3 and not any(_gone(pid) for pid in pids)
        time.sleep(0.5)  # a worker is inside the stuck item
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert _wait_gone(pids) == []


def test_killed_workers_and_zygote_are_replaced() -> None:
    """SIGKILL of an idle worker costs no verdict (the item is retried on a fresh worker);
    SIGKILL of the zygote (which takes its workers with it) starts a new one."""
    with VerifierPool(VerifierConfig(workers=2, timeout_seconds=20)) as pool:
        items = [VerifyItem(rf"\\boxed{{{n}}}", str(n)) for n in range(8)]
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        assert [v.reason for v in pool.check_batch(items)] == ["equal"] * 8
        old_zygote, old_workers = pool.zygote_pid(), pool.worker_pids()
        os.kill(old_zygote, signal.SIGKILL)
        assert _wait_gone([old_zygote, *old_workers]) == []
        assert [v.reason for v in pool.check_batch(items)] == ["equal"] * 8
        assert pool.zygote_pid() != old_zygote and pool.alive_workers() == 2
        assert pool.errors == 0


def test_close_during_a_call_ends_it() -> None:
    """close() while another thread waits on stuck items: the call ends with an error at
    once instead of running its items to their limits, and close() returns promptly."""
    pool = VerifierPool(VerifierConfig(workers=1, timeout_seconds=60))
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            pool.check_batch([STUCK] * 3)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    pool.close()
    thread.join(timeout=30)
    assert time.monotonic() - started < 30 and not thread.is_alive()
    assert len(errors) == 1 and "closed" in str(errors[0])


SLOW_MAIN = """
import time
time.sleep(2.0)  # a heavy __main__: forkserver workers re-import it before they can work
from astro_core.answers import VerifierConfig, VerifierPool
from astro_core.protocols import VerifyItem

if __name__ == "__main__":
    with VerifierPool(VerifierConfig(workers=1, timeout_seconds=0.5)) as pool:
        print(pool.verify_batch([VerifyItem("$\\\\boxed{3}$", "3")])[0].reason)
"""


def test_a_slow_starting_worker_is_not_timed_as_its_first_item(tmp_path) -> None:
    """Regression: the per-item limit used to include the worker's start-up, so the first
    items of a fresh pool in a process with a heavy __main__ (the `astro` CLI, a trainer)
    came back "timeout" -- a wrong -1 reward for a correct answer."""
    import os
    import subprocess
    import sys

    script = tmp_path / "slow_main.py"
    script.write_text(SLOW_MAIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "equal"
