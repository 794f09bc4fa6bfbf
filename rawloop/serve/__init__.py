"""Serving loops over HTTP as persistent agents: the ASGI app, sessions, remote tools, OTel.

It imports ``core``, ``loop``, ``trace`` and ``replay``; never ``debug`` or
``capture``.
"""
