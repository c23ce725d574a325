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
