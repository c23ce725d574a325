"""Hostile inputs return within the time limit and leave the pool healthy."""

from __future__ import annotations

import time

from astro_core.answers import VerifierConfig, VerifierPool
from astro_core.protocols import Verifier, VerifyItem

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
    stuck = VerifyItem(r"\boxed{(10^{8})!}", r"(10^{8})! + 1")
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
    stuck = VerifyItem(r"\boxed{(10^{8})!}", r"(10^{8})! + 1")
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
