"""The sync engine: raw tables, the loader, window planning, run records and the engine itself."""
