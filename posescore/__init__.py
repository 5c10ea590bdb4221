"""The ``posescore`` command line's composition root (``posescore.cli``)."""
