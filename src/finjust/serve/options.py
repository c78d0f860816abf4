"""The limits and settings of one server: what a request may ask for and how work is batched."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from finjust.errors import ServeError


def is_loopback(host: str) -> bool:
    """Whether a host name or address (``localhost``, ``127.0.0.2``, ``::1``, ``[::1]``) is this machine's loopback."""
    name = host.removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeOptions:
    """Settings of :func:`~finjust.serve.create_app`; every size is bounded so one client cannot starve others."""

    #: clients must send ``Authorization: Bearer <api_key>``; None serves without a key
    api_key: str | None = None
    #: the ``model`` name clients use; None: the run or model folder's name
    model_name: str | None = None
    #: most requests answered by one batched generate call (greedy, non-streaming requests only)
    max_batch: int = 8
    #: most requests waiting for the worker; more are refused with 503 rather than queued forever
    max_queue: int = 64
    #: largest request body in bytes
    max_body_bytes: int = 1_000_000
    #: most chat messages in one request
    max_messages: int = 256
    #: longest prompt in tokens; None: the model's context length
    max_prompt_tokens: int | None = None
    #: most tokens one request may generate; also what a request that gives no max_tokens gets
    max_tokens_limit: int = 512
    #: seconds a client has to send its body: a client that goes silent mid-body is answered 408
    body_seconds: float = 30.0
    #: answer only requests addressed to this machine as localhost, 127.0.0.1 or [::1] (the
    #: ``Host`` header): a web page the operator visits cannot then reach a server without a key
    #: through DNS rebinding; ``finjust serve`` sets it for a loopback address without a key
    local_only: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_messages", "max_tokens_limit"):
            if getattr(self, name) < 1:
                raise ServeError(f"{name} must be at least 1, got {getattr(self, name)}", status=500)
        if not self.body_seconds > 0:
            raise ServeError(f"body_seconds must be above 0, got {self.body_seconds}", status=500)
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ServeError(f"max_prompt_tokens must be at least 1, got {self.max_prompt_tokens}", status=500)
