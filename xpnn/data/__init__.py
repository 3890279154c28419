"""Data sources (SIGNS, the embedded stand-in) and minibatch orders."""
