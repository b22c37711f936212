"""The ``obsd`` command: run, check-config, tail and top (see ``obsd.cli.main``)."""
