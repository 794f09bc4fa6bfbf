"""The sans-IO core: bytes in, events, deltas and Turns out.

The SSE decoder, the Responses and Chat Completions accumulators, ``Turn``,
``parse_stream``, the error hierarchy, and the pure data helpers every layer
above needs (JSON pointers, RFC 6902 patches, JSON diffs, redaction). Nothing
here awaits, opens a socket or reads a clock: it imports neither httpx nor
anyio, nor any other rawloop subpackage.
"""
