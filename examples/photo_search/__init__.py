"""An offline photo and notes search app over `edge_gcl.index` (see README.md)."""
