"""The Python SDK: open sessions, submit encrypted data, follow them, download the adapter."""

from cotune.sdk.client import Client, SessionOptions, SubmitResult

__all__ = ["Client", "SessionOptions", "SubmitResult"]
