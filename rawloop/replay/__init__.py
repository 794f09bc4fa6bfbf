"""Replay: answering a loop, or any HTTP client, from a trace or a script.

The responder and the httpx transport replay in process; the h11 loopback
server serves the same answers on a real port, with chunkings and faults.
It imports ``core``, ``loop`` and ``trace``.
"""
