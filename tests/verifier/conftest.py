from __future__ import annotations

from collections.abc import Iterator

import pytest

from astro_core.answers import VerifierConfig, VerifierPool


@pytest.fixture(scope="package")
def pool() -> Iterator[VerifierPool]:
    """One pool for the package: 2 workers, a generous limit for a shared CI machine."""
    with VerifierPool(VerifierConfig(workers=2, timeout_seconds=20)) as p:
        yield p
