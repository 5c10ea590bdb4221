"""Serving: the embedded Triton server, its supervisor, the HTTP front, the python models' plumbing, model export."""
