"""The guide's FastAPI integration, for real: FastAPI app -> LlamaServer -> llama.cpp worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi import Depends, FastAPI, HTTPException, Request  # noqa: E402
from llamahome.server import LlamaServer  # noqa: E402

from tests.conftest import TINY_MODEL_ID  # noqa: E402


async def test_the_guides_fastapi_example_runs(engine_env: Path) -> None:
    def get_current_user(request: Request) -> str:  # the guide leaves this to the app
        if request.headers.get("x-user") != "alice":
            raise HTTPException(status_code=401)
        return "alice"

    # -- the guide's example, as written --
    app = FastAPI()
    llama = LlamaServer()

    @app.post("/process")
    async def process_prompt(
        prompt: str,
        current_user: Any = Depends(get_current_user)
    ) -> Any:
        return await llama.process(prompt)
    # --

    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            reply = await http.post("/process", params={"prompt": "Hello"},
                                    headers={"x-user": "alice"})
            denied = await http.post("/process", params={"prompt": "Hello"})
    finally:
        await llama.close()
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"text", "usage", "model", "created", "finish_reason"}
    assert body["usage"]["completion_tokens"] == 100 and body["model"] == TINY_MODEL_ID
    assert denied.status_code == 401


async def test_fastapi_lifespan_starts_and_stops_the_engine(engine_env: Path) -> None:
    llama = LlamaServer()
    app = FastAPI(lifespan=llama.lifespan)

    @app.get("/stream")
    async def stream() -> Any:
        return [chunk.text async for chunk in llama.stream("Hi", max_tokens=3, temperature=0)]

    async with app.router.lifespan_context(app):
        assert llama._engine.service is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            reply = await http.get("/stream")
        assert len(reply.json()) >= 1
    assert llama._engine.service is None
