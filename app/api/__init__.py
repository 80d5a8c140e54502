"""HTTP layer: thin routes over the serving pipeline and the store."""
