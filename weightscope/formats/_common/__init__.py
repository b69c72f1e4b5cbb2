"""What several readers share: file regions, zip members, bounded JSON."""
