"""The `myapp` package of the seed guide's examples (tests/apps/dirty)."""
