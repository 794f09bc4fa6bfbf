"""The dispatch routes through ASGI: accepted before answering, idempotent, then run and reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.serve.app import app
from rawloop.serve.store import SessionKey

from ..conftest import Reply, ScriptedAPI
from .test_app import text_reply

pytestmark = pytest.mark.anyio


def served(api: ScriptedAPI, tmp_path: Path) -> Any:
    loop = Loop("gpt-5.5", http_client=api.client(), retries=RetryPolicy(max_retries=0))
    return app({"hooks": loop}, store=tmp_path / "s.db")


async def test_a_dispatch_is_stored_before_the_202_then_run(tmp_path: Path) -> None:
    api = ScriptedAPI([text_reply("handled"), Reply(b'{"error": {"message": "no"}}', status=400)])
    asgi = served(api, tmp_path)
    transport = httpx.ASGITransport(asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        accepted = await client.post(
            "/agents/hooks/acct-1/dispatch",
            json={"input": {"event": "paid", "amount": 5}, "session": "webhooks"},
            headers={"Idempotency-Key": "evt-1"},
        )
        assert accepted.status_code == 202
        receipt = accepted.json()
        assert set(receipt) == {"dispatch_id", "accepted_at", "status"}
        assert accepted.headers["location"] == f"/dispatches/{receipt['dispatch_id']}"
        # Stored before the answer: a new store on the file sees it queued.
        queued = await client.get(f"/dispatches/{receipt['dispatch_id']}")
        assert queued.json()["status"] == "queued" and api.requests == []

        resent = await client.post(
            "/agents/hooks/acct-1/dispatch",
            json={"input": {"event": "paid", "amount": 5}},
            headers={"Idempotency-Key": "evt-1"},
        )
        assert resent.status_code == 200
        assert resent.json()["dispatch_id"] == receipt["dispatch_id"]
        second = await client.post("/agents/hooks/acct-1/dispatch", json={"input": "refund"})
        assert second.status_code == 202

        # No lifespan here (so no workers): run the queue by hand.
        first_done, _ = await asgi.dispatcher.drain()
        done = (await client.get(f"/dispatches/{receipt['dispatch_id']}")).json()
        failed = (await client.get(f"/dispatches/{second.json()['dispatch_id']}")).json()
    assert first_done.dispatch_id == receipt["dispatch_id"]
    assert done["status"] == "done" and done["result"]["final_response"] == "handled"
    assert done["session"] == "webhooks" and done["attempts"] == 1
    assert failed["status"] == "failed" and failed["error"]["type"] == "APIStatusError"
    assert api.bodies[0]["input"] == [{"role": "user", "content": '{"event":"paid","amount":5}'}]
    turns = await asgi.store.turns(SessionKey("hooks", "acct-1", "webhooks"))
    assert len(turns) == 1 and turns[0].metadata["dispatch_id"] == receipt["dispatch_id"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind"),
    [
        (b"{not json", {}, 400, "invalid_json"),
        (b'{"session": "s"}', {}, 422, "invalid_field"),
        (b'{"input": 1, "session": "../x"}', {}, 400, "invalid_name"),
        (b'{"input": 1}', {"Idempotency-Key": "x" * 300}, 400, "invalid_header"),
        (b'{"input": 1, "proxy_url": "file:///etc"}', {}, 422, "invalid_field"),
    ],
)
async def test_bad_dispatches_are_refused_and_not_stored(
    tmp_path: Path, body: bytes, headers: dict[str, str], status: int, kind: str
) -> None:
    asgi = served(ScriptedAPI([]), tmp_path)
    transport = httpx.ASGITransport(asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.post("/agents/hooks/a/dispatch", content=body, headers=headers)
        unknown = await client.post("/agents/nobody/a/dispatch", json={"input": 1})
        status_of_nothing = await client.get("/dispatches/dsp_none")
        wrong_method = await client.post("/dispatches/dsp_none")
    assert (answer.status_code, answer.json()["error"]["type"]) == (status, kind)
    assert unknown.status_code == 404
    assert status_of_nothing.status_code == 404
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET"
    assert await asgi.dispatcher.drain() == []
