"""Typed gRPC clients over tritonclient for the models in model_repository/ (serving issue)."""
