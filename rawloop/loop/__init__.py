"""The tool loop: ``Loop``, its wire shell, state, hook bus, tools and retries.

``rawloop.loop.wire`` is the only place the loop touches the network and the
clock; everything else here decides. It imports only ``rawloop.core``.
"""
