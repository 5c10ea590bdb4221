"""Serving: the embedded Triton server, its supervisor, the HTTP front, the python models' plumbing, model export."""

#: The request parameter the supervisor's probes carry (``supervisor.probe_model``); the models
#: count such requests apart (``plumbing.note_probe``).
PROBE_PARAMETER = "posescore_probe"
