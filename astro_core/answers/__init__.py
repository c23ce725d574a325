"""Answers: extraction from model responses, equivalence with gold answers, rewards.

    pool = VerifierPool(VerifierConfig(workers=2, timeout_seconds=5))
    results = pool.verify_batch([VerifyItem(response, gold)], RewardMapping())

`VerifierPool` implements the `astro_core.protocols.Verifier` Protocol; every check runs in a
worker process with a hard time limit. `check` is the single-item logic it runs.
"""

from astro_core.answers.config import VerifierConfig
from astro_core.answers.extract import Extraction, extract_answer, extract_gold
from astro_core.answers.parse import Answer, parse_answer
from astro_core.answers.pool import VerificationCancelled, VerifierPool, shared_pool
from astro_core.answers.verify import Verdict, check, is_equivalent, to_result

__all__ = [
    "Answer",
    "Extraction",
    "Verdict",
    "VerificationCancelled",
    "VerifierConfig",
    "VerifierPool",
    "check",
    "extract_answer",
    "extract_gold",
    "is_equivalent",
    "parse_answer",
    "shared_pool",
    "to_result",
]
