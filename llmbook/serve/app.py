"""The HTTP API: the endpoints that OpenAI's clients speak, on FastAPI.

- ``GET /v1/models``: the one model served;
- ``POST /v1/completions``: continue a ``prompt`` (a string);
- ``POST /v1/chat/completions``: answer the last user message of
  ``messages``, in the instruction format of chapter 11 when the tokenizer
  has its special tokens, as plain text otherwise;
- ``"stream": true`` on either: server-sent events, one chunk per piece of
  text as it is generated, then ``data: [DONE]``;
- ``GET /health``: the load (busy rows, waiting requests);
- ``GET /``: a chat page that streams its answers (no CDN; offline).

Errors have OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``: 400 for bad input (malformed JSON, a missing field, a negative
or too large ``max_tokens``, a prompt longer than the context), 404 for an
unknown model, 503 when the waiting queue is full. A client that goes away
mid-stream cancels its request; everyone else is served on.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from llmbook.finetune import END, SPECIAL_TOKENS, format_instruction
from llmbook.generate import SamplingParams, TextStream
from llmbook.serve.batcher import Batcher, Busy
from llmbook.serve.batcher import Request as Job

__all__ = ["create_app", "chat_prompt"]

CHAT_PAGE = Path(__file__).with_name("chat.html")


class _Sampling(BaseModel):
    model: str
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False


class CompletionBody(_Sampling):
    prompt: str


class Message(BaseModel):
    role: str
    content: str


class ChatBody(_Sampling):
    messages: list[Message] = Field(min_length=1)


def _error(status: int, message: str, kind: str, param=None):
    body = dict(message=message, type=kind, param=param, code=None)
    return JSONResponse({"error": body}, status_code=status)


def _eot_stops(tokenizer) -> list[int]:
    """A plain completion ends at the end-of-text token, if there is one."""
    return [tokenizer.eot_id] if tokenizer.eot_id is not None else []


def chat_prompt(tokenizer, messages) -> tuple[str, list[int]]:
    """The text the model continues for a chat, and the ids that end its
    answer: chapter 11's format (its special tokens, the answer ending at
    ``<|end|>``) for an instruction-tuned tokenizer, else the messages as
    ``role: content`` lines and an ``assistant:`` line to continue."""
    special = getattr(tokenizer, "special_tokens", {})
    if all(t in special for t in SPECIAL_TOKENS):
        system = [m.content for m in messages if m.role == "system"]
        users = [m.content for m in messages if m.role == "user"]
        text = format_instruction(users[-1] if users else "", *system[-1:])
        return text, [special[END]]
    lines = [f"{m.role}: {m.content}" for m in messages]
    return "\n".join(lines + ["assistant:"]), _eot_stops(tokenizer)


def create_app(batcher: Batcher, tokenizer, name: str) -> FastAPI:
    """The server's app for the model in ``batcher`` (started by the
    caller), known to clients as ``name``."""
    app = FastAPI(title="llmbook", docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())[1:])
        text = f"{where}: {first['msg']}" if where else first["msg"]
        return _error(400, text, "invalid_request_error", where or None)

    @app.get("/health")
    async def health():
        return {"status": "ok", **batcher.load()}

    @app.get("/v1/models")
    async def models():
        card = dict(id=name, object="model", created=0, owned_by="llmbook")
        return {"object": "list", "data": [card]}

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        page = CHAT_PAGE.read_text(encoding="utf-8")
        # answers of up to half the context, leaving half for the question
        half = str(max(1, batcher.max_len // 2))
        return page.replace("{{MODEL}}", name).replace("{{MAX_TOKENS}}", half)

    @app.get("/favicon.ico", status_code=204)
    async def no_icon():
        return None

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        ids = tokenizer.encode(body.prompt)
        return await _serve(
            body, ids, _eot_stops(tokenizer), request, chat=False
        )

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request):
        text, stops = chat_prompt(tokenizer, body.messages)
        return await _serve(body, tokenizer.encode(text), stops, request, True)

    async def _serve(body, ids, stops, request, chat: bool):
        if body.model != name:
            return _error(
                404,
                f"the model {body.model!r} does not exist; this server has "
                f"{name!r}",
                "invalid_request_error",
                "model",
            )
        try:
            params = SamplingParams(
                body.max_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                seed=body.seed,
                stop_ids=tuple(stops),
            )
            job = _Job(ids, params, tokenizer, asyncio.get_running_loop())
            batcher.submit(job.request)
        except Busy as e:
            return _error(503, str(e), "server_busy")
        except (TypeError, ValueError) as e:
            param = "max_tokens" if "max_" in str(e) else None
            return _error(400, str(e), "invalid_request_error", param)
        head = _Head(chat, name, len(ids))
        if body.stream:
            return StreamingResponse(
                _events(job, head, request), media_type="text/event-stream"
            )
        text = "".join([piece async for piece in job.pieces()])
        return head.whole(text, job.request)

    return app


class _Job:
    """A request with its text on the event loop's side: the batcher's
    thread hands tokens over with ``call_soon_threadsafe``."""

    def __init__(self, ids, params, tokenizer, loop):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.text = TextStream(tokenizer)
        self.loop = loop

        def put(item):  # from the batcher's thread
            if not loop.is_closed():  # a server shutting down: nobody waits
                loop.call_soon_threadsafe(self.queue.put_nowait, item)

        self.request = Job(
            ids, params, on_token=put, on_done=lambda reason: put(None)
        )

    async def pieces(self):
        """Text pieces as tokens arrive (a stop token is not shown)."""
        stops = self.request.params.stop_ids
        while (token := await self.queue.get()) is not None:
            if token not in stops:
                piece = self.text.push(token)
                if piece:
                    yield piece
        if rest := self.text.flush():
            yield rest


class _Head:
    """The fields every response of one request shares."""

    def __init__(self, chat: bool, model: str, n_prompt: int):
        self.chat, self.model, self.n_prompt = chat, model, n_prompt
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        self.object = kind

    def _usage(self, request) -> dict:
        n = len(request.tokens)
        return dict(
            prompt_tokens=self.n_prompt,
            completion_tokens=n,
            total_tokens=self.n_prompt + n,
        )

    def _choice(self, text, reason, delta: bool) -> dict:
        if not self.chat:
            return dict(
                index=0, text=text, finish_reason=reason, logprobs=None
            )
        key = "delta" if delta else "message"
        message = {"role": "assistant", "content": text}
        if delta and reason is not None:
            message = {}
        return {"index": 0, key: message, "finish_reason": reason}

    def whole(self, text: str, request) -> dict:
        return dict(
            id=self.id,
            object=self.object,
            created=self.created,
            model=self.model,
            choices=[self._choice(text, _reason(request), delta=False)],
            usage=self._usage(request),
        )

    def chunk(self, text: str, reason=None) -> str:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        data = dict(
            id=self.id,
            object=obj,
            created=self.created,
            model=self.model,
            choices=[self._choice(text, reason, delta=True)],
        )
        return f"data: {json.dumps(data)}\n\n"


def _reason(request) -> str:
    return "stop" if request.finish_reason == "stop" else "length"


async def _events(job: _Job, head: _Head, http_request: Request):
    """Server-sent events: a chunk per piece of text, a last chunk with the
    finish reason, ``[DONE]``. A client that disconnects cancels the job
    (Starlette cancels this generator)."""
    try:
        async for piece in job.pieces():
            yield head.chunk(piece)
        yield head.chunk("", _reason(job.request))
        yield "data: [DONE]\n\n"
    finally:
        job.request.cancel()  # a no-op when it has finished
