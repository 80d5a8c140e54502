"""Developer tooling shipped with the package (local Redis for `make run` and the tests)."""
