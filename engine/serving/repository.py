"""A model repository's configs as the server reads them (standard protobuf text, no server needed)."""

from __future__ import annotations

from pathlib import Path


def model_parameters(repository: str | Path, model: str) -> dict[str, str]:
    """The ``parameters`` of ``<repository>/<model>/config.pbtxt`` as {key: string value}."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((Path(repository) / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return {key: parameter.string_value for key, parameter in config.parameters.items()}
