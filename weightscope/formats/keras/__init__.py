"""Keras files: legacy HDF5 ``.h5`` (full model or weights only), ``.keras`` zips and
``.weights.h5`` stores. ``reader`` is the entry point."""
