"""The keypoint archive: catalog, segments, ingest, maintenance, search in place, shards."""
