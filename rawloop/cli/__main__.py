"""``python -m rawloop.cli``: the same as the ``rawloop`` command."""

from .main import main

raise SystemExit(main())
