"""Reporters present the shared model; they never import an adapter or a framework."""
