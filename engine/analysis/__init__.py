"""Analysis: the answer of each service (score, dtw), the movement score, people across frames, repetitions."""
