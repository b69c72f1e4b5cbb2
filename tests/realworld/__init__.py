"""The real-world corpus: trained weight files from public packages (see docs/corpus.md)."""
