"""The ``rawloop`` command line: wiring only, each subcommand calls into a package."""
