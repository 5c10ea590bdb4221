"""The jobs behind the CLI, one module per command, and their shared inputs."""
