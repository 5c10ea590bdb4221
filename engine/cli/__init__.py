"""The engine's commands of the ``posescore`` command line."""
