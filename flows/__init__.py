"""Prefect flows: the entry points. Thin: they compose tasks and decide."""

import os

# Polars allocates through jemalloc, which keeps freed pages for a while before giving them back: a
# partition processed chunk by chunk would hold several chunks' worth. Return them at once. Read when
# Polars loads, so only before its first import. A value the user set wins; Polars' own default, which
# it writes into the environment of every process that imports it (and so of their children), does not.
_POLARS_DEFAULT = {"dirty_decay_ms:500", "muzzy_decay_ms:1000"}
if set(filter(None, os.environ.get("_RJEM_MALLOC_CONF", "").split(","))) <= _POLARS_DEFAULT:
    os.environ["_RJEM_MALLOC_CONF"] = "dirty_decay_ms:0,muzzy_decay_ms:0"
