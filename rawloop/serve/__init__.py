"""Serving loops as persistent agents: HTTP, SSE and WebSocket, sessions, durable dispatch.

``app`` (routing, the lifespan) and ``websocket`` are the ASGI surfaces, over
``asgi`` (bodies, JSON, event streams), ``requests`` (a request's context and
fields) and ``answers`` (events and transcripts). ``agents`` builds a loop per
context (name, id, session, env, payload); ``turns`` runs one turn of a session
and stores it once; ``store`` is the ``SessionStore`` interface, with
``store_sqlite`` (the default) and ``store_postgres``; ``dispatcher`` runs the
dispatch queue; ``harness`` drives agents from code; ``client`` is a client of
the server; ``forward`` and ``remote_tools`` talk to a tool proxy; ``otel``
emits spans; ``migrate`` imports the session files of older servers;
``command`` is ``rawloop serve-agent``.

It imports ``core``, ``loop``, ``trace`` and ``replay``; never ``debug`` or
``capture``.
"""
