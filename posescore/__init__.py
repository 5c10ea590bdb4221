"""posescore: score human movement. One import name; its subpackages are ``posescore.kernels``
(pure array math), ``posescore.clients`` (gRPC clients), ``posescore.engine`` (everything with I/O)
and ``posescore.loadtests``; ``posescore.cli`` is the command line (docs/ARCHITECTURE.md)."""
