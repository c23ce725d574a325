"""Asserting on a refused gRPC call, for the services' adversarial tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest


def refused(
    call: Callable[..., Any],
    *args: Any,
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
    **kwargs: Any,
) -> str:
    """The details of the error `call(*args, **kwargs)` fails with, which must be `code`; a
    streaming call's replies are read to their end."""
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if not hasattr(result, "ListFields"):  # a stream: read it to its end
            list(result)
    assert info.value.code() == code, (info.value.code(), info.value.details())
    return str(info.value.details())
