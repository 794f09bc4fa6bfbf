"""Wire traces: the format and its reader, the recorder, ``show`` and ``diff``.

The recorder is a hook on the loop's bus, so this layer sits above
``rawloop.loop``; it imports ``core`` and ``loop`` only.
"""
