"""Capturing other clients' runs: the recording proxy, importers, to-test, pytest plugin.

It turns what customers' clients sent into traces and traces into tests, and
imports ``core``, ``loop``, ``trace`` and ``replay``; never ``debug`` or ``serve``.
"""
