"""The stepping debugger (``rawloop step``): breakpoints, edits and the console.

It drives a loop over a replay or a live endpoint and imports ``core``,
``loop``, ``trace`` and ``replay``; never ``capture`` or ``serve``.
"""
