"""OpenAI-compatible endpoints: GET /v1/models and POST /v1/chat/completions.

The same bearer tokens as the rest of the API; each completion is a recorded reply (see
app.usecases.llm). Answers use OpenAI's shapes: `chat.completion`, `chat.completion.chunk`
events ending with `data: [DONE]`, and errors as {"error": {message, type, param, code}}
(main.py routes every error on a /v1/ path through `openai_error` here).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import errors
from app.auth import require_user, services_of
from app.http_input import read_json
from app.services import Services
from app.sse_events import to_json
from app.usecases import fields, llm
from app.usecases.errors import (
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
    Unavailable,
    UseCaseError,
)

log = logging.getLogger(__name__)
OWNER = "localchat"
PREFIX = "/v1/"


# -- errors ------------------------------------------------------------------------------


def error_body(message: str, kind: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _kind(error: UseCaseError) -> str:
    if isinstance(error, NotAuthenticated):
        return "authentication_error"
    if isinstance(error, Forbidden):
        return "permission_error"
    if isinstance(error, RateLimited):
        return "rate_limit_error"
    if isinstance(error, Unavailable):
        return "server_error"
    return "invalid_request_error"


def use_case_error_response(error: UseCaseError) -> JSONResponse:
    param = error.field if isinstance(error, InvalidInput) else None
    code = error.code
    if isinstance(error, NotFound) and error.what == "model":
        code, param = "model_not_found", "model"
    message = error.problem if isinstance(error, InvalidInput) else error.message
    if param and isinstance(error, InvalidInput):
        message = f"{param}: {message}"
    return JSONResponse(error_body(message, _kind(error), param, code),
                        errors.status_of(error), headers=errors.headers_of(error))


async def openai_error(request: Request, exc: Exception) -> Response:
    """Any error on a /v1/ path, in OpenAI's error shape."""
    if isinstance(exc, UseCaseError):
        return use_case_error_response(exc)
    if isinstance(exc, HTTPException):
        message = "Unknown request URL." if exc.status_code == 404 else str(exc.detail)
        code = errors.HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(message, "invalid_request_error", None, code),
                            exc.status_code, headers=dict(exc.headers or {}))
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("Something went wrong on the server.", "server_error",
                                   None, "internal_error"), 500)


def is_openai(request: Request) -> bool:
    return request.url.path.startswith(PREFIX)


# -- routes ------------------------------------------------------------------------------


def model_object(services: Services, model: dict[str, Any]) -> dict[str, Any]:
    created = int(services.settings.data_dir.stat().st_mtime)
    # max_model_len (vLLM's name) tells a LocalChat using this one as its ENGINE_URL the
    # context it may fill.
    return {"id": model["id"], "object": "model", "created": created, "owned_by": OWNER,
            "max_model_len": model["n_ctx"]}


async def models(request: Request) -> Response:
    await require_user(request)
    services = services_of(request)
    data = [model_object(services, m) for m in llm.list_models(services)]
    return JSONResponse({"object": "list", "data": data})


async def model(request: Request) -> Response:
    await require_user(request)
    services = services_of(request)
    found = llm.find_model(services, request.path_params["model_id"])
    assert found is not None  # find_model raises NotFound for an unknown id
    listed = next(m for m in llm.list_models(services) if m["id"] == found.id)
    return JSONResponse(model_object(services, listed))


async def chat_completions(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    body = await read_json(request, services.settings.max_body_bytes)
    stream = fields.boolean(body, "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidInput("stream_options", "must be an object.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput("model", "must be a string.")
    generation = llm.chat_request(services, body)
    queued = await llm.start(services, user["id"], generation, llm.find_model(services, model))
    if stream:
        chunks = stream_chunks(services, user["id"], queued, generation.sampling.stop,
                               bool(options.get("include_usage")))
        return EventSourceResponse(
            chunks, ping=services.settings.sse_ping_seconds,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    result = await llm.run(services, user["id"], queued, generation.sampling.stop)
    return JSONResponse({
        "id": completion_id(queued), "object": "chat.completion", "created": queued.created,
        "model": queued.model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": usage(result.prompt_tokens, result.token_count),
    })


def completion_id(queued: llm.Queued) -> str:
    return f"chatcmpl-{queued.reply_id.hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


async def stream_chunks(services: Services, user_id: str, queued: llm.Queued,
                        stop: tuple[str, ...], include_usage: bool,
                        ) -> AsyncIterator[ServerSentEvent]:
    """chat.completion.chunk events from the reply's committed events, then [DONE].

    A client that goes away before the end cancels the generation."""
    def chunk(delta: dict[str, Any], finish: str | None = None,
              extra: dict[str, Any] | None = None) -> ServerSentEvent:
        body = {"id": completion_id(queued), "object": "chat.completion.chunk",
                "created": queued.created, "model": queued.model, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}
        return ServerSentEvent(data=to_json({**body, **(extra or {})}))

    cutter = llm.StopCutter(stop)
    prompt_tokens = 0
    ended = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for step in llm.follow(services, queued):
            if isinstance(step, llm.Begin):
                prompt_tokens = step.prompt_tokens
            elif isinstance(step, llm.Piece):
                text = cutter.push(step.text)
                if text:
                    yield chunk({"content": text})
                if cutter.stopped:
                    await llm.cancel(services, user_id, queued)
            else:
                ended = True
                if step.outcome == "failed" or step.outcome == "interrupted":
                    failure = error_body(step.error_message or "The generation failed.",
                                         "server_error", None, step.error_code)
                    yield ServerSentEvent(data=to_json(failure))
                else:
                    rest = cutter.rest()
                    if rest:
                        yield chunk({"content": rest})
                    reason = "length" if step.finish_reason == "length" else "stop"
                    yield chunk({}, reason)
                    if include_usage:
                        yield ServerSentEvent(data=to_json({
                            "id": completion_id(queued), "object": "chat.completion.chunk",
                            "created": queued.created, "model": queued.model, "choices": [],
                            "usage": usage(prompt_tokens, step.token_count)}))
                yield ServerSentEvent(data="[DONE]")
                return
    finally:
        if not ended:
            # The response is being torn down (its scope cancelled): shield the cancel.
            with anyio.CancelScope(shield=True):
                await llm.cancel(services, user_id, queued)


routes = [
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", model, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
]
