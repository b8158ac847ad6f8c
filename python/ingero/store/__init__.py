"""Store: where databases live and how they are read."""
