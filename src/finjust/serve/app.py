"""The FastAPI application: routes, API key, bounded bodies, OpenAI-shaped errors.

Bodies are read and validated here rather than by FastAPI's parameter machinery, so that the
size limit applies before anything is parsed and every refusal is OpenAI's error JSON with a
message that names the field.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from finjust.errors import ServeError
from finjust.serve.decode import Row
from finjust.serve.engine import DONE, FAILED, TEXT, Engine, Job
from finjust.serve.options import ServeOptions, is_loopback
from finjust.serve.requests import (
    ChatRequest,
    CompletionRequest,
    Prepared,
    prepare_chat,
    prepare_completion,
    refuse_long_lists,
)
from finjust.serve.responses import CHAT, DONE_EVENT, TEXT_COMPLETION, Envelope, Shape, error_body, sse, usage
from finjust.serve.source import ServedModel, load_served_model


@dataclass(frozen=True)
class _Endpoint:
    """A generating endpoint: its request body, how that becomes a prompt, its responses' names."""

    schema: type[BaseModel]
    prepare: Callable[..., Prepared]
    shape: Shape


_ENDPOINTS: dict[str, _Endpoint] = {
    "chat": _Endpoint(ChatRequest, prepare_chat, CHAT),
    "completion": _Endpoint(CompletionRequest, prepare_completion, TEXT_COMPLETION),
}


def create_app(source: str | Path | ServedModel, options: ServeOptions | None = None) -> FastAPI:
    """An OpenAI-compatible app answering with ``source``: a run folder, an exported model folder, or a loaded model.

    The worker thread starts now and stops when the app shuts down (uvicorn's lifespan) or
    when ``app.state.engine.close()`` is called.

    Raises:
        ModelLoadError, CheckpointError: ``source`` cannot be loaded.
    """
    options = options or ServeOptions()
    served = source if isinstance(source, ServedModel) else load_served_model(source, options.model_name)
    if options.model_name:
        served.name = options.model_name
    engine = Engine(served, options.max_batch, options.max_queue)
    # Tokenizing a prompt near the body limit takes ~0.5 s: off the event loop, so that other
    # clients' streams and health checks go on meanwhile. One thread: requests are tokenized
    # in turn, never two at once on the same tokenizer.
    preparing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finjust-prepare")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        preparing.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(engine.close)

    app = FastAPI(title="finjust serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.served, app.state.options = engine, served, options
    _add_error_handlers(app)
    _add_routes(app, served, options, engine, preparing)
    return app


def _add_routes(app: FastAPI, served: ServedModel, options: ServeOptions, engine: Engine,
                preparing: ThreadPoolExecutor) -> None:  # fmt: skip
    created = int(time.time())
    card = {"id": served.name, "object": "model", "created": created, "owned_by": "finjust"}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": served.name}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _check_access(request, options)
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request) -> dict[str, Any]:
        _check_access(request, options)
        if name != served.name:
            raise ServeError(f"model {name!r} is not served here; this server serves {served.name!r}",
                             status=404, param="model", code="model_not_found")  # fmt: skip
        return card

    reads = _BodyReads(2 * options.max_queue)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await _generate(request, "chat", served, options, engine, preparing, reads)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _generate(request, "completion", served, options, engine, preparing, reads)


class _BodyReads:
    """Request bodies being read at once, at most ``limit`` (each may hold up to max_body_bytes
    for body_seconds): bodies are read before a place in the queue is taken, so the queue's
    bound does not bound them. Counted on the event loop's one thread: no lock."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.count >= self.limit:
            raise ServeError(f"the server is busy: {self.limit} request bodies are being read; retry shortly",
                             status=503, code="server_busy", kind="server_error")  # fmt: skip
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


#: how often a waiting non-streaming request checks that its client is still connected
DISCONNECT_POLL_SECONDS = 0.25


async def _generate(request: Request, endpoint: str, served: ServedModel, options: ServeOptions, engine: Engine,
                    preparing: ThreadPoolExecutor, reads: _BodyReads) -> Any:  # fmt: skip
    _check_access(request, options)
    _require_json(request)
    # read before a place in the queue is taken: a client that goes silent mid-body holds none
    with reads.slot():
        body = await _read_body(request, options.max_body_bytes, options.body_seconds)
    handled = _ENDPOINTS[endpoint]
    loop = asyncio.get_running_loop()
    with engine.admitted():  # a full server refuses before parsing and tokenizing, not after
        prepared = await loop.run_in_executor(preparing, _prepare, handled, body, served, options)
        job = Job(prepared.prompt, prepared.sampling, prepared.stream, loop)
        engine.submit(job)
    envelope = Envelope.new(handled.shape, served.name)
    if prepared.stream:
        return StreamingResponse(_stream(job, envelope, prepared), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip
    row = await _wait(job, request)
    return envelope.response(row, len(prepared.prompt))


def _prepare(handled: _Endpoint, body: bytes, served: ServedModel, options: ServeOptions) -> Prepared:
    """Parse, validate and tokenize ``body``, in the preparing thread: off the event loop, where a
    large invalid body's validation would hold up every other client's stream."""
    value = _json(body)
    refuse_long_lists(value, served, options)
    try:
        parsed = handled.schema.model_validate(value)
    except ValidationError as error:
        raise _validation_error(error) from None
    return handled.prepare(parsed, served, options)


async def _wait(job: Job, request: Request) -> Row:
    """The finished row; a client that disconnects meanwhile cancels its job, which then ends
    at its next token. Starlette does not cancel a plain (non-streaming) endpoint whose client
    went away, so the wait also asks every DISCONNECT_POLL_SECONDS."""
    try:
        while True:
            try:
                kind, payload = await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_SECONDS)
            except asyncio.TimeoutError:
                if not job.cancelled.is_set() and await request.is_disconnected():
                    job.cancelled.set()
                continue
            if kind == DONE:
                return payload
            if kind == FAILED:
                raise payload
    except asyncio.CancelledError:
        job.cancelled.set()
        raise


async def _stream(job: Job, envelope: Envelope, prepared: Prepared) -> AsyncIterator[str]:
    """Server-sent events: an opening chunk, one per piece of text, the finish reason, usage if asked, [DONE]."""
    shape = envelope.shape
    try:
        if shape.chat:
            yield envelope.chunk([shape.chunk_choice(None, opening=True)])
        while True:
            kind, payload = await job.events.get()
            if kind == TEXT:
                yield envelope.chunk([shape.chunk_choice(payload)])
            elif kind == DONE:
                yield envelope.chunk([shape.chunk_choice(None, payload.finish_reason)])
                if prepared.include_usage:
                    yield envelope.chunk([], {"usage": usage(len(prepared.prompt), payload.completion_tokens)})
                break
            else:  # the status line is already sent: the error travels as an event, as OpenAI's does
                yield sse(error_body(str(payload), payload.kind, code=payload.code))
                break
        yield DONE_EVENT
    finally:  # also when the client disconnects mid-stream: stop generating for it
        job.cancelled.set()


def _check_access(request: Request, options: ServeOptions) -> None:
    """The Host header where the server answers local requests only, then the API key."""
    if options.local_only:
        host = request.headers.get("host", "")
        if not _names_this_machine(host):
            raise ServeError(f"Host {host!r} is not this machine: a server without an API key on a loopback address "
                             "answers requests to localhost, 127.0.0.1 or [::1] only (a web page cannot reach it "
                             "by another name); start it with --api-key to serve others", status=403,
                             code="host_not_allowed", kind="permission_error")  # fmt: skip
    _check_key(request, options)


def _names_this_machine(host: str) -> bool:
    """Whether a Host header (``localhost:8000``, ``[::1]:8000``, ``127.0.0.2``) names the loopback interface."""
    return is_loopback(host if host.endswith("]") else host.rpartition(":")[0] if ":" in host else host)


def _require_json(request: Request) -> None:
    """POST bodies must say they are JSON, as OpenAI's clients send them: a browser sends a
    cross-site form or text/plain POST without asking the server first, JSON only after a CORS
    check this server never passes."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise ServeError(f"the request body must be sent as Content-Type: application/json (got {media or 'none'})",
                         status=415, code="unsupported_media_type")  # fmt: skip


def _check_key(request: Request, options: ServeOptions) -> None:
    if options.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), options.api_key.encode()):
        message = "missing API key" if not header else "incorrect API key"
        raise ServeError(f"{message}: send the header 'Authorization: Bearer <key>' with the key this server was "
                         "started with", status=401, code="invalid_api_key", kind="authentication_error")  # fmt: skip


async def _read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (whatever Content-Length
    claims), and with 408 where it has not all come within ``seconds``."""
    too_big = ServeError(f"the request body is larger than this server's limit of {limit} bytes", status=413,
                         code="request_too_large")  # fmt: skip
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_big
                chunks.append(chunk)
    except TimeoutError:
        raise ServeError(f"the request body did not arrive within {seconds:g} s", status=408,
                         code="request_timeout") from None  # fmt: skip
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ServeError(f"the request body is not valid JSON: {error}", code="invalid_json") from None
    except (RecursionError, ValueError) as error:  # nested thousands deep; an integer of thousands of digits
        raise ServeError(f"the request body is not JSON this server reads: {error}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise ServeError(f"the request body must be a JSON object, got {type(value).__name__}", code="invalid_json")
    return value


def _validation_error(error: ValidationError) -> ServeError:
    """The most specific problem, as ``field: what is wrong (got value)``; the count of the others.

    A value that fits none of a union's types gets a problem per type, located under pydantic's
    name for the type (``content.str``, ``content.list[TextPart].0.text``): the deepest one says
    what is wrong, and the type names are not the client's field names.
    """
    problems = error.errors(include_url=False)
    first = max(problems, key=lambda problem: len(_client_loc(problem["loc"])))
    where = ".".join(str(part) for part in _client_loc(first["loc"])) or "body"
    got = json.dumps(first.get("input"), default=str)
    got = got if len(got) <= 80 else got[:77] + "..."
    others = len(problems) - 1
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    return ServeError(f"{where}: {_plain_message(first)} (got {got}){more}", param=where, code="invalid_value")


def _plain_message(problem: Any) -> str:
    """pydantic's message in the client's terms: JSON's type names, not this server's classes."""
    value = problem.get("input")
    if isinstance(value, float) and math.isnan(value):
        return "expected a number, not NaN"
    if problem["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a JSON object"
    return str(problem["msg"]).removeprefix("Value error, ")


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _client_loc(loc: tuple[Any, ...]) -> list[Any]:
    """``loc`` without pydantic's union-member names (``str``, ``list[TextPart]``)."""
    return [part for part in loc if not (isinstance(part, str) and ("[" in part or part in _TYPE_NAMES))]


def _add_error_handlers(app: FastAPI) -> None:
    def answer(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=headers)

    async def refused(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ServeError)
        headers = {"Retry-After": "1"} if error.status == 503 else None
        return answer(error.status, error_body(str(error), error.kind, error.param, error.code), headers)

    async def http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        message = f"{request.method} {request.url.path}: {error.detail}"
        code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_")  # "not_found", as OpenAI's codes read
        # the error's own headers too: a 405 must say which methods the path allows
        return answer(error.status_code, error_body(message, "invalid_request_error", code=code), error.headers)

    async def crashed(request: Request, error: Exception) -> JSONResponse:
        # not logged here: after this answer Starlette raises the error again, and uvicorn logs its traceback
        # the message stays in the log: an exception's text may name the server's files or memory
        return answer(500, error_body("internal error; the server's log has the details", "server_error"))

    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        ServeError: refused, HTTPException: http, Exception: crashed,
    }  # fmt: skip
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
