"""Import session files of an older rawloop (``--sessions-dir``) into a ``SessionStore``.

Older servers kept each session as a trace file ``DIR/{agent}/{id}/{session}.jsonl``
holding one run per turn, each request repeating the whole conversation. Each
file is imported once, run by run, as turns of the same session (a session
the store already holds is left alone), and the files are left in place:
``rawloop show`` and ``rawloop diff`` still read them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio.to_thread

from ..core.errors import RawloopError
from .sessions import check_name, session_runs
from .store import SessionKey, SessionStore
from .turns import encode_run

__all__ = ["import_session_files"]

logger = logging.getLogger("rawloop.http")


def _session_files(root: Path) -> list[tuple[SessionKey, Path]]:
    found = []
    for path in sorted(root.glob("*/*/*.jsonl")):
        try:
            key = SessionKey(
                check_name(path.parent.parent.name, "agent name"),
                check_name(path.parent.name, "id"),
                check_name(path.stem, "session"),
            )
        except ValueError:
            continue  # not a file the old server wrote
        found.append((key, path))
    return found


async def import_session_files(store: SessionStore, root: str | Path) -> int:
    """Import every session file under ``root`` the store does not hold yet; how many turns.

    A file that cannot be read is logged and skipped (it stays where it is).
    """
    imported = 0
    for key, path in await anyio.to_thread.run_sync(_session_files, Path(root)):
        if await store.session(key) is not None:
            continue
        try:
            runs = await anyio.to_thread.run_sync(session_runs, path)
        except RawloopError as exc:
            logger.warning("rawloop.http: session file %s not imported: %s", path, exc)
            continue
        history: list[dict[str, object]] = []
        for run in runs:
            turn = encode_run(run, history, metadata={"imported_from": str(path)})
            if turn is None:
                continue
            await store.append_turn(key, turn)
            history.extend(dict(item) for item in turn.items)
            imported += 1
    return imported
