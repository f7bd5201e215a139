"""The `audience` command: a thin layer over the `audience` package."""
