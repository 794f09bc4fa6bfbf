"""Wire traces: the format and its reader, the recorder, and the ways to read one.

``format`` (reader), ``recorder``; ``runs`` groups a trace by run, iteration
and attempt for ``timeline`` (the terminal), ``show`` (raw bytes, JSON),
``html_page``/``html_diff`` (self-contained pages, with ``html_kit``,
``html_assets``, ``html_waterfall``), ``live`` (a timeline as it happens);
``diff`` compares two traces; ``export`` writes HAR and OTLP JSON.

The recorder is a hook on the loop's bus, so this layer sits above
``rawloop.loop``; it imports ``core`` and ``loop`` only.
"""
