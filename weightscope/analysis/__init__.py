"""Checks on a model that return dataclasses: health flags, the init check, the params check
and explain's arithmetic. Nothing here formats text or knows a file format."""
