"""TensorFlow's own files, read without TensorFlow: checkpoint bundles (``prefix.index`` +
``prefix.data-SSSSS-of-NNNNN``; ``reader`` is the entry point) and SavedModel directories
(``savedmodel``, which reads its ``variables/`` bundle through ``reader``)."""
