"""The ``tsadapt`` command (:mod:`tsadapt.cli.main`): the top room, which may import every other."""
