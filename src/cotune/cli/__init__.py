"""The ``cotune`` command line: one module per subcommand, assembled in :mod:`cotune.cli.app`."""
