"""Report tables: the studies' published layouts."""
