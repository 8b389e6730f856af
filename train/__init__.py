"""Training loops, evaluation and checkpoint writing (all the I/O of training)."""
