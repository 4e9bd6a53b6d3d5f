"""Prefect flows: the entry points. Thin: they compose tasks and decide."""

import os

# Polars allocates through jemalloc, which keeps freed pages for seconds before giving them back: a
# partition processed chunk by chunk would hold several chunks' worth. Return them at once (read when
# Polars loads, so only before its first import; a value the user set wins).
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
