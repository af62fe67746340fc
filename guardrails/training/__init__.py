"""Offline training of the injection classifier and the labelled corpus it (and the bench) read."""
