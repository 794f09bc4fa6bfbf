"""The contract every ``SessionStore`` keeps, run against each kind in ``STORE_KINDS``.

Several stores made by ``store_factory`` share one database, standing in for
several worker processes. No test reads a clock: leases of 0 run out at once,
and waiting is observed through the order of events.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
import pytest

from rawloop.serve.store import (
    DispatchRequest,
    NewTurn,
    SessionFull,
    SessionKey,
    SessionLimits,
    SessionStore,
    StoreError,
)

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio

KEY = SessionKey("support", "cust-1", "billing")


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def reply(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }


def turn(n: int) -> NewTurn:
    return NewTurn(
        items=[user(f"question {n}"), reply(f"answer {n}")],
        records=[{"kind": "header", "n": n}, {"kind": "end", "stop_reason": "completed"}],
        metadata={"model": "gpt-5.5", "usage": {"input_tokens": n}},
    )


# -- sessions -----------------------------------------------------------------------


async def test_turns_come_back_in_order_with_what_was_stored(store: SessionStore) -> None:
    for n in range(3):
        stored = await store.append_turn(KEY, turn(n))
        assert stored.index == n
        assert stored.key == KEY
    turns = await store.turns(KEY)
    assert [t.index for t in turns] == [0, 1, 2]
    assert [t.items for t in turns] == [list(turn(n).items) for n in range(3)]
    assert turns[1].records == list(turn(1).records)
    assert turns[2].metadata == {"model": "gpt-5.5", "usage": {"input_tokens": 2}}
    assert [t.index for t in await store.turns(KEY, start=1, stop=2)] == [1]
    assert await store.history(KEY) == [item for n in range(3) for item in turn(n).items]


async def test_each_turn_is_stored_once_so_a_session_grows_linearly(store: SessionStore) -> None:
    for _n in range(20):
        await store.append_turn(KEY, NewTurn(items=[user("x" * 1000), reply("y" * 1000)]))
    sizes = {t.size for t in await store.turns(KEY)}
    assert len(sizes) == 1  # the 20th turn is no bigger than the first
    info = await store.session(KEY)
    assert info is not None
    assert info.turns == 20
    assert info.size == 20 * sizes.pop()


async def test_sessions_of_one_instance_stay_separate(store: SessionStore) -> None:
    other = SessionKey(KEY.agent, KEY.id, "shipping")
    await store.append_turn(KEY, turn(0))
    await store.append_turn(other, turn(1))
    await store.append_turn(SessionKey(KEY.agent, "cust-2"), turn(2))
    assert [t.items for t in await store.turns(KEY)] == [list(turn(0).items)]
    assert [t.items for t in await store.turns(other)] == [list(turn(1).items)]
    listed = [(s.key, s.turns) for s in await store.sessions()]
    assert listed == [
        (SessionKey("support", "cust-1", "billing"), 1),
        (SessionKey("support", "cust-1", "shipping"), 1),
        (SessionKey("support", "cust-2", "default"), 1),
    ]
    assert [s.key.name for s in await store.sessions(id="cust-1")] == ["billing", "shipping"]
    assert await store.sessions(agent="nobody") == []


async def test_a_session_exports_as_one_run_per_turn(store: SessionStore) -> None:
    for n in range(3):
        await store.append_turn(KEY, turn(n))
    whole = [orjson.loads(line) for line in (await store.export(KEY)).splitlines()]
    assert [r["kind"] for r in whole] == ["header", "end"] * 3
    assert [r["n"] for r in whole if r["kind"] == "header"] == [0, 1, 2]
    last = [orjson.loads(line) for line in (await store.export(KEY, -1)).splitlines()]
    assert last == list(map(dict, turn(2).records))
    with pytest.raises(StoreError, match="turns 0 to 2"):
        await store.export(KEY, 3)
    with pytest.raises(StoreError, match="no session"):
        await store.export(SessionKey("nobody", "x"))


async def test_an_unknown_session_is_empty(store: SessionStore) -> None:
    assert await store.session(KEY) is None
    assert await store.turns(KEY) == []
    assert await store.history(KEY) == []


async def test_a_turn_past_the_limits_is_refused_and_not_stored(store: SessionStore) -> None:
    store.limits = SessionLimits(max_turns=2, max_bytes=10**9)
    await store.append_turn(KEY, turn(0))
    await store.append_turn(KEY, turn(1))
    with pytest.raises(SessionFull, match="2 turns"):
        await store.append_turn(KEY, turn(2))
    assert len(await store.turns(KEY)) == 2

    other = SessionKey("support", "cust-9")
    store.limits = SessionLimits(max_turns=100, max_bytes=3000)
    await store.append_turn(other, NewTurn(items=[user("x" * 1000)]))
    with pytest.raises(SessionFull, match="limit of 3000"):
        await store.append_turn(other, NewTurn(items=[user("x" * 2500)]))
    info = await store.session(other)
    assert info is not None and info.turns == 1


async def test_concurrent_appends_from_two_stores_get_distinct_indices(
    store_factory: StoreFactory,
) -> None:
    async with store_factory() as a, store_factory() as b:

        async def append(s: SessionStore, base: int) -> None:
            for n in range(8):
                await s.append_turn(KEY, turn(base + n))

        async with anyio.create_task_group() as group:
            group.start_soon(append, a, 0)
            group.start_soon(append, b, 100)
        turns = await a.turns(KEY)
    assert [t.index for t in turns] == list(range(16))
    numbers = sorted(t.records[0]["n"] for t in turns)
    assert numbers == [*range(8), *range(100, 108)]


async def test_sessions_survive_a_reopen(store_factory: StoreFactory) -> None:
    async with store_factory() as first:
        await first.append_turn(KEY, turn(0))
    async with store_factory() as second:
        assert [t.items for t in await second.turns(KEY)] == [list(turn(0).items)]


async def test_json_values_come_back_equal(store: SessionStore) -> None:
    odd: list[Any] = [
        None,
        True,
        0,
        -1.5,
        2**53,
        "",
        "é\u2028\x00",
        [],
        {},
        {"a": [1, {"b": None}]},
    ]
    await store.append_turn(KEY, NewTurn(items=[{"v": v} for v in odd], metadata={"odd": odd}))
    (stored,) = await store.turns(KEY)
    assert stored.items == [{"v": v} for v in odd]
    assert stored.metadata == {"odd": odd}


# -- the session lock ---------------------------------------------------------------------


async def test_the_lock_holds_across_stores(store_factory: StoreFactory) -> None:
    events: list[str] = []
    async with store_factory() as a, store_factory() as b:
        held = anyio.Event()
        release = anyio.Event()

        async def first() -> None:
            async with a.lock(KEY):
                events.append("a in")
                held.set()
                await release.wait()
                events.append("a out")

        async def second() -> None:
            await held.wait()
            async with b.lock(KEY):
                events.append("b in")

        async def other_session() -> None:
            await held.wait()
            async with b.lock(SessionKey("support", "cust-1", "other")):
                events.append("other in")
            release.set()  # only now may a leave: b must still be waiting

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(first)
                group.start_soon(second)
                group.start_soon(other_session)
    assert events == ["a in", "other in", "a out", "b in"]


async def test_a_lock_whose_lease_ran_out_is_taken_over(store_factory: StoreFactory) -> None:
    # A lease of 0 is never renewed: its holder is as good as dead.
    async with store_factory() as a, store_factory() as b:
        with anyio.fail_after(10):
            async with a.lock(KEY, lease=0), b.lock(KEY):
                taken = True
    assert taken


async def test_a_released_lock_is_free_again(store: SessionStore) -> None:
    with anyio.fail_after(10):
        for _ in range(3):
            async with store.lock(KEY):
                pass


# -- the dispatch queue -----------------------------------------------------------------


def request(n: int = 0, **kw: Any) -> DispatchRequest:
    return DispatchRequest(agent="support", id="cust-1", input={"event": n}, **kw)


async def test_an_accepted_dispatch_is_queued(store: SessionStore) -> None:
    dispatch, created = await store.enqueue(request(session="billing", proxy_url="http://p"))
    assert created
    assert dispatch.status == "queued"
    assert dispatch.attempts == 0
    found = await store.dispatch(dispatch.dispatch_id)
    assert found is not None
    assert found.request == dispatch.request
    assert found.request.input == {"event": 0}
    assert found.accepted_at == dispatch.accepted_at
    assert found.document()["status"] == "queued"
    assert await store.dispatch("dsp_unknown") is None


async def test_an_idempotency_key_makes_a_resend_a_no_op(store: SessionStore) -> None:
    first, created = await store.enqueue(request(1, idempotency_key="evt-1"))
    again, created_again = await store.enqueue(request(2, idempotency_key="evt-1"))
    assert created and not created_again
    assert again.dispatch_id == first.dispatch_id
    assert again.request.input == {"event": 1}
    other, created_other = await store.enqueue(
        DispatchRequest(agent="support", id="cust-2", input=3, idempotency_key="evt-1")
    )
    assert created_other and other.dispatch_id != first.dispatch_id
    claimed = [await store.claim("w"), await store.claim("w"), await store.claim("w")]
    assert [c.dispatch_id if c else None for c in claimed] == [
        first.dispatch_id,
        other.dispatch_id,
        None,
    ]


async def test_each_dispatch_is_claimed_by_exactly_one_worker(store_factory: StoreFactory) -> None:
    async with store_factory() as a, store_factory() as b:
        ids = [(await a.enqueue(request(n)))[0].dispatch_id for n in range(10)]
        claimed: dict[str, list[str]] = {"a": [], "b": []}

        async def work(name: str, s: SessionStore) -> None:
            while (d := await s.claim(name)) is not None:
                claimed[name].append(d.dispatch_id)
                assert await s.complete(d.dispatch_id, name, {"ok": d.request.input})

        async with anyio.create_task_group() as group:
            group.start_soon(work, "a", a)
            group.start_soon(work, "b", b)
        assert sorted(claimed["a"] + claimed["b"]) == sorted(ids)
        for dispatch_id in ids:
            done = await a.dispatch(dispatch_id)
            assert done is not None and done.status == "done" and done.attempts == 1


async def test_claims_go_oldest_first_and_skip_finished_work(store: SessionStore) -> None:
    first = (await store.enqueue(request(1)))[0]
    second = (await store.enqueue(request(2)))[0]
    claimed = await store.claim("w")
    assert claimed is not None and claimed.dispatch_id == first.dispatch_id
    assert claimed.status == "running" and claimed.worker == "w" and claimed.attempts == 1
    assert await store.fail(first.dispatch_id, "w", {"type": "Boom", "message": "no"})
    claimed = await store.claim("w")
    assert claimed is not None and claimed.dispatch_id == second.dispatch_id
    assert await store.claim("w") is None  # second is running under a live lease
    failed = await store.dispatch(first.dispatch_id)
    assert failed is not None
    assert failed.status == "failed" and failed.error == {"type": "Boom", "message": "no"}


async def test_work_of_a_dead_worker_is_claimed_again(store: SessionStore) -> None:
    accepted = (await store.enqueue(request()))[0]
    dead = await store.claim("dead", lease=0)
    assert dead is not None
    again = await store.claim("alive")
    assert again is not None and again.dispatch_id == accepted.dispatch_id
    assert again.attempts == 2 and again.worker == "alive"
    # The dead worker lost it: nothing it says counts any more.
    assert not await store.renew(accepted.dispatch_id, "dead")
    assert not await store.complete(accepted.dispatch_id, "dead", "late")
    assert await store.renew(accepted.dispatch_id, "alive")
    assert await store.complete(accepted.dispatch_id, "alive", ["the", "result"])
    assert not await store.complete(accepted.dispatch_id, "alive", "twice")
    done = await store.dispatch(accepted.dispatch_id)
    assert done is not None
    assert (done.status, done.result) == ("done", ["the", "result"])
    assert done.finished_at is not None and done.started_at is not None


async def test_the_queue_survives_a_reopen(store_factory: StoreFactory) -> None:
    async with store_factory() as first:
        accepted = (await first.enqueue(request(7, needs_token=True)))[0]
    async with store_factory() as second:
        claimed = await second.claim("w")
        assert claimed is not None and claimed.dispatch_id == accepted.dispatch_id
        assert claimed.request.needs_token and claimed.request.input == {"event": 7}
