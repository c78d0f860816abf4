"""The two request bodies the server accepts, checked field by field, and the prompt each turns into.

Field names and meanings follow OpenAI's API. Unknown fields are ignored (clients send many
optional ones); features finjust does not implement are refused with a 400 that names them
rather than silently ignored. Differences from OpenAI: ``temperature`` defaults to 0
(greedy, the decoding ``finjust eval`` scores) and ``n`` must be 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from finjust.data.control_tokens import control_tokens, find_control_tokens
from finjust.data.example import Message, with_system_prompt
from finjust.data.templates import chat_ids
from finjust.errors import ServeError
from finjust.serve.decode import Sampling
from finjust.serve.options import ServeOptions
from finjust.serve.source import ServedModel

#: OpenAI's newer "developer" role is what older templates call "system"
_ROLE_NAMES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_MAX_STOPS = 4  # as OpenAI
_MAX_STOP_CHARS = 256


class _Strict(BaseModel):
    # strict: "5" is not a number and true is not 1; a wrong type is the client's bug, said at once
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        # checked up front: pydantic's own message for a failed union lists every member's failure
        parts_ok = isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value)
        if not isinstance(value, str) and not parts_ok:
            raise ValueError("content must be a string or a list of text parts like {\"type\": \"text\", "
                             "\"text\": \"...\"}; finjust serves text-only models")  # fmt: skip
        return value

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Generation(_Strict):
    """Fields both endpoints share."""

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)  # 0: a nucleus of the top token alone, greedy
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)  # what torch.manual_seed takes
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # refused when set to anything but their neutral value: finjust does not implement them
    logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int]

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, str) or _list_of(value, str) or _list_of(value, int):
            return value
        raise ValueError("prompt must be a string, a list of one string, or a list of token ids")
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None


def _list_of(value: Any, kind: type) -> bool:
    return isinstance(value, list) and all(type(v) is kind for v in value)  # type(): True is no token id


@dataclass(frozen=True)
class Prepared:
    """A checked request: the prompt's tokens and how to decode."""

    prompt: list[int]
    sampling: Sampling
    stream: bool
    include_usage: bool


def refuse_long_lists(body: dict[str, Any], served: ServedModel, options: ServeOptions) -> None:
    """Refuse more messages than the limit, or a prompt of more token ids than the context, before
    validating them: validating (and describing the problems of) a body of 200,000 messages takes
    seconds."""
    messages, prompt = body.get("messages"), body.get("prompt")
    if isinstance(messages, list) and len(messages) > options.max_messages:
        raise ServeError(f"{len(messages)} messages, more than this server's limit of {options.max_messages}",
                         param="messages", code="too_many_messages")  # fmt: skip
    longest = _prompt_limit(served, options)
    if isinstance(prompt, list) and len(prompt) > longest:
        raise ServeError(f"prompt holds {len(prompt)} items; a prompt is one string or at most {longest} token ids",
                         param="prompt", code="context_length_exceeded")  # fmt: skip


def prepare_chat(request: ChatRequest, served: ServedModel, options: ServeOptions) -> Prepared:
    """Render the messages with the model's chat template, ending with the assistant header."""
    _refuse_unsupported(request, served)  # before any tokenizing: a request for another model is cheap to refuse
    messages = [Message(_ROLE_NAMES[m.role], m.text()) for m in request.messages]
    for number, message in enumerate(messages):
        _require_unicode(message.content, f"messages.{number}.content")
        _refuse_control_tokens(message.content, f"messages.{number}.content", control_tokens(served.tokenizer))
    messages = list(with_system_prompt(messages, served.system_prompt))
    try:
        prompt = chat_ids(served.tokenizer, messages, generation_prompt=True)
    except Exception as error:  # templates raise their own errors, e.g. "roles must alternate"
        raise ServeError(f"the model's chat template rejected these messages: {error}", param="messages") from error
    max_tokens = request.max_completion_tokens or request.max_tokens
    named = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    return _prepare(request, prompt, max_tokens, served, options, "messages", named)


def prepare_completion(request: CompletionRequest, served: ServedModel, options: ServeOptions) -> Prepared:
    """Tokenize the raw prompt (no chat template): a string, a list of one string, or token ids."""
    _refuse_unsupported(request, served)
    for name in ("echo", "suffix"):
        if getattr(request, name):
            raise ServeError(f"{name} is not supported by finjust serve", param=name, code="unsupported")
    if request.best_of not in (None, 1):
        raise ServeError("best_of must be 1", param="best_of", code="unsupported")
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise ServeError(f"prompt holds {len(prompt)} strings; send one prompt per request", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        _require_unicode(prompt, "prompt")
        try:
            ids = list(served.tokenizer(prompt)["input_ids"])
        except (TypeError, ValueError) as error:  # text this tokenizer refuses
            raise ServeError(f"the prompt cannot be tokenized: {error}", param="prompt") from None
    else:
        ids = [int(t) for t in prompt]
        vocab = len(served.tokenizer)
        if any(not 0 <= t < vocab for t in ids):
            raise ServeError(f"prompt token ids must lie in [0, {vocab})", param="prompt")
    if not ids:
        raise ServeError("the prompt is empty", param="prompt")
    return _prepare(request, ids, request.max_tokens, served, options, "prompt")


def _require_unicode(text: str, param: str) -> None:
    """JSON can carry a lone UTF-16 surrogate (``"\\ud800"``), which no tokenizer encodes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ServeError(f"{param} is not valid Unicode text: a lone surrogate at character {error.start}",
                         param=param, code="invalid_value") from None  # fmt: skip


def _refuse_control_tokens(text: str, param: str, tokens: tuple[str, ...]) -> None:
    """Message text must not hold the model's control tokens: the template would turn them into
    real turn boundaries (the raw /v1/completions prompt may, as it is a template's output)."""
    found = find_control_tokens(text, tokens)
    if found:
        what, them = (f"{found[0]!r}, a control token", "it") if len(found) == 1 else (
            f"{', '.join(map(repr, found))}, control tokens", "them")  # fmt: skip
        raise ServeError(f"{param} holds {what} of this model, which would end or open a turn inside the message; "
                         f"leave {them} out of message text", param=param, code="invalid_value")  # fmt: skip


#: temperatures below this decode greedily: dividing logits by less overflows them to inf
MIN_SAMPLING_TEMPERATURE = 1e-4


def _prompt_limit(served: ServedModel, options: ServeOptions) -> int:
    """The longest prompt in tokens: --max-prompt-tokens, and one token short of the context."""
    return min(options.max_prompt_tokens or served.context, served.context - 1)


def _effective_temperature(temperature: float | None) -> float:
    return 0.0 if temperature is None or temperature < MIN_SAMPLING_TEMPERATURE else temperature


def _prepare(
    request: _Generation, prompt: list[int], max_tokens: int | None, served: ServedModel, options: ServeOptions,
    prompt_param: str, max_tokens_param: str = "max_tokens",
) -> Prepared:  # fmt: skip
    limit = _prompt_limit(served, options)
    if len(prompt) > limit:
        raise ServeError(f"the prompt is {len(prompt)} tokens, more than this server's limit of {limit}; "
                         "shorten it", param=prompt_param, code="context_length_exceeded")  # fmt: skip
    room = served.context - len(prompt)
    if max_tokens is not None and max_tokens > options.max_tokens_limit:
        raise ServeError(f"{max_tokens_param}={max_tokens} is more than this server's limit of "
                         f"{options.max_tokens_limit}", param=max_tokens_param,
                         code="max_tokens_too_large")  # fmt: skip
    if max_tokens is not None and max_tokens > room:
        raise ServeError(f"the model's context is {served.context} tokens: the {len(prompt)}-token prompt leaves "
                         f"room for {room} new tokens, not {max_tokens_param}={max_tokens}", param=max_tokens_param,
                         code="context_length_exceeded")  # fmt: skip
    sampling = Sampling(
        max_tokens=max_tokens or min(options.max_tokens_limit, room),
        temperature=_effective_temperature(request.temperature),
        top_p=1.0 if request.top_p is None else request.top_p,
        seed=request.seed,
        stop=_stops(request.stop),
    )
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    return Prepared(prompt, sampling, bool(request.stream), include_usage)


def _refuse_unsupported(request: _Generation, served: ServedModel) -> None:
    if request.model is not None and request.model != served.name:
        raise ServeError(f"model {request.model!r} is not served here; this server serves {served.name!r}",
                         status=404, param="model", code="model_not_found")  # fmt: skip
    if request.n not in (None, 1):
        raise ServeError(f"n={request.n}: finjust serve returns one choice per request; send n=1 (or "
                         "several requests)", param="n", code="unsupported")  # fmt: skip
    unsupported = {
        "logprobs": request.logprobs not in (None, False, 0),
        "presence_penalty": request.presence_penalty not in (None, 0.0),
        "frequency_penalty": request.frequency_penalty not in (None, 0.0),
        "logit_bias": bool(request.logit_bias),
        "tools": bool(request.tools),
        "response_format": bool(request.response_format and request.response_format.get("type") != "text"),
    }
    for name, refused in unsupported.items():
        if refused:
            raise ServeError(f"{name} is not supported by finjust serve; leave it out", param=name,
                             code="unsupported")  # fmt: skip
    if request.stream_options is not None and not request.stream:  # as OpenAI answers it
        raise ServeError("stream_options applies only to streamed answers: set stream: true, or leave "
                         "stream_options out", param="stream_options")  # fmt: skip


def _stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > _MAX_STOPS:
        raise ServeError(f"{len(stops)} stop strings; at most {_MAX_STOPS}", param="stop")
    if any(not s for s in stops):
        raise ServeError("stop strings must not be empty", param="stop")
    if any(len(s) > _MAX_STOP_CHARS for s in stops):  # each is searched for in the answer at every token
        raise ServeError(f"stop strings must be at most {_MAX_STOP_CHARS} characters", param="stop")
    return tuple(stops)
