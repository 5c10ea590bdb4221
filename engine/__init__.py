"""posescore engine: everything with I/O (decoding, the Triton server, archives, jobs, the CLI)."""
