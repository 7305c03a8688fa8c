"""Serving flexguard: the inference engine (no HTTP in it) and the REST app that is a thin client of it."""
