"""Media in and out: decoding, encoding, keypoint files, sample media."""
