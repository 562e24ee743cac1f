"""A small server speaking the OpenAI Chat Completions protocol, for the `openai` generator's tests.

It answers like a grounded model: it reads the numbered passages out of the prompt, picks the sentence
sharing the most characters with the question and cites its passage. The requested model name selects a
fault instead, so each test needs only a setting:

- `grounded`: the behaviour above
- `out-of-range`: also cites [9], which does not exist
- `no-cite`: a plausible answer with no marker
- `missing`: says the passages do not contain the answer
- `slow`: waits `slow_seconds` before answering (streaming: trickles a piece every 0.5 s)
- `malformed`: broken JSON (streaming: a broken chunk)
- `error`: HTTP 500 with an OpenAI error body
Requests (headers and JSON bodies) are recorded in `requests` for assertions.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

PASSAGE = re.compile(r"^\[(\d+)\] 「.*?」（.*?）\n(.+?)(?=\n\n|\n質問:|\Z)", re.MULTILINE | re.DOTALL)
QUESTION = re.compile(r"^質問: (.+)$", re.MULTILINE)


def grounded_answer(prompt: str) -> str:
    question = (QUESTION.search(prompt) or [None, ""])[1]
    best = (0, "", "1")
    for number, text in PASSAGE.findall(prompt):
        for sentence in re.findall(r"[^。！？\n]+[。！？]?", text):
            shared = len(set(question) & set(sentence))
            if shared > best[0]:
                best = (shared, sentence.strip(), number)
    sentence = best[1].rstrip("。") or "資料によると、そのとおりです"
    return f"資料によると、{sentence}。[{best[2]}]"


def create_fake_openai(api_key: str | None = None, slow_seconds: float = 5.0) -> FastAPI:
    app = FastAPI()
    app.state.requests = []

    def reply_text(model: str, prompt: str) -> str:
        if model == "out-of-range":
            return grounded_answer(prompt) + "詳しくは別の資料にもあります。[9]"
        if model == "no-cite":
            return "それはよく知られた事実です。"
        if model == "missing":
            return "記事の中に、この質問に答える情報は見つかりませんでした。"
        return grounded_answer(prompt)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": None}},
                            status_code=status)

    @app.get("/v1/models")
    async def models(request: Request):
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return error(401, "Incorrect API key provided")
        return {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.requests.append({"headers": dict(request.headers), "json": body})
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return error(401, "Incorrect API key provided")
        model = body.get("model", "")
        if model == "error":
            return error(500, "the model crashed")
        prompt = "\n".join(m["content"] for m in body.get("messages", []))
        text = reply_text(model, prompt)
        created = int(time.time())
        if not body.get("stream"):
            if model == "slow":
                await asyncio.sleep(slow_seconds)
            if model == "malformed":
                return PlainTextResponse('{"choices": [{"message": {"content": "途中で', media_type="application/json")
            return {"id": "chatcmpl-test", "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(text),
                              "total_tokens": len(prompt) + len(text)}}

        def chunk(delta: dict, finish: str | None = None) -> str:
            data = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            if model == "malformed":
                yield "data: {not json\n\n"
                return
            pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
            for piece in pieces * (50 if model == "slow" else 1):
                if model == "slow":
                    await asyncio.sleep(0.5)
                yield chunk({"content": piece})
            yield chunk({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
