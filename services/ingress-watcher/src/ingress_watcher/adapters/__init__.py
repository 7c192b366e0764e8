"""Every side effect of the watcher, each behind a small Protocol with an in-memory fake."""
