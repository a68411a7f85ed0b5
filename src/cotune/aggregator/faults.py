"""Whose fault it is when a session cannot go on, and what the aggregator does about it.

- **A contribution's** (its author controls it: bytes that do not match the commitment,
  do not decrypt, parse or validate, a false claim, an unusable key, a size over the
  session's caps): that contributor is rejected with a reason code and a signed
  certificate (:mod:`cotune.aggregator.intake`); the session goes on without it.
- **The session's** (its owner's spec or rules, more than the operator allows, a
  deadline that passed): :class:`SessionFailedError`; the session stops (``recover``
  can retry it) and on chain it expires, refunding every stake.
- **The infrastructure's** (storage or chain unreachable, timing out):
  :class:`InfrastructureError`, or any error :func:`is_infrastructure_fault` recognises;
  retried with backoff until the training deadline, never a rejection, never a slash.
"""

from __future__ import annotations

import requests

from cotune.chain.errors import ChainError, DeploymentError, RevertError
from cotune.common.errors import CotuneError
from cotune.storage.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    StorageConfigError,
    StorageError,
)

RETRY_FIRST_SECONDS = 5.0
"""Wait before the first retry after an infrastructure fault; it doubles each time."""
RETRY_MAX_SECONDS = 300.0
"""The longest wait between two retries."""


class SessionFailedError(CotuneError):
    """The session cannot complete (recorded as ``failed``; ``recover`` retries)."""


class InfrastructureError(CotuneError):
    """Storage or the chain failed us: retry later, blame no contributor."""


def is_infrastructure_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is a fault of storage or the chain (retried, never blamed on anyone).

    A blob that the store says is absent, or whose bytes do not hash to their id, is
    not: the store answered, and what it holds is the uploader's doing.
    """
    if isinstance(exc, InfrastructureError):
        return True
    if isinstance(exc, StorageError):
        return not isinstance(exc, BlobNotFoundError | BlobIntegrityError | StorageConfigError)
    if isinstance(exc, ChainError):
        return not isinstance(exc, RevertError | DeploymentError)
    return isinstance(exc, requests.RequestException | ConnectionError | TimeoutError)


def retry_delay(faults: int) -> float:
    """Seconds to wait after the ``faults``-th infrastructure fault in a row."""
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2.0 ** max(0, faults - 1))
