"""Load tests of a posescore deployment: locust users speaking gRPC through clients/."""
