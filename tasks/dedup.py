"""Decide, per event key, which delivered version is the event: the earliest delivery wins.

Pure Polars, no database: the warehouse writer feeds it the batch's valid records and the bronze
versions of the same keys. The rule does not depend on the order partitions are processed in:
the winner of an event key is its version with the smallest delivery key (partition, produced_at,
manifest, asset, line), whether that version is already in bronze or arrives now. Records with the
winner's content are the event (once) or duplicates of it; any other content is a conflicting
duplicate and goes to quarantine.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# `done`: an earlier chunk of this run already accepted the key (its bronze row is this run's winner)
EXISTING_SCHEMA = {"key": pl.String, "old_hash": pl.String, "old_dk": pl.String, "done": pl.Boolean}


@dataclass
class Resolution:
    accepted: pl.DataFrame  # one record per accepted event key (first record with the winning content)
    conflicting: pl.DataFrame  # records whose content differs from their key's winner
    duplicate_in_batch: int  # further records with the winner's content
    bronze_inserted: int  # keys whose winner is new to bronze (or displaces a later version)
    bronze_existing: int  # keys whose winning content is already in bronze
    bronze_kept: list[str]  # keys whose existing bronze row is the earliest delivery: not written
    displaced: list[str]  # keys whose bronze row is a later, conflicting version: move it to quarantine
    relineage: list[str]  # keys whose bronze row has the same content, first delivered later: rewrite lineage
    copies: pl.DataFrame  # batch records that are not their key's bronze row (duplicates and conflicts)


def take(records: pl.DataFrame, mask: pl.Series) -> pl.DataFrame:
    """The rows where `mask` holds; the frame itself, uncopied, when that is every row."""
    return records if mask.all() else records.filter(mask)


def first_versions(records: pl.DataFrame, key: str) -> pl.DataFrame:
    """The batch's earliest record of each event key; `records` are in delivery order."""
    return take(records, records[key].is_first_distinct())


def resolve_versions(records: pl.DataFrame, existing: pl.DataFrame, key: str) -> Resolution:
    """Apply the earliest-delivery rule to a batch's valid records against existing bronze versions.

    `records` are in delivery order. Decisions are made on a narrow (key, hash, delivery key) frame;
    the wide rows are only gathered, and not at all when every row is kept. A partition read in
    chunks resolves each chunk in turn: a key an earlier chunk accepted (`done`) has its winner in
    bronze already, so its records here are duplicates or conflicts, never accepted twice.
    """
    narrow = records.select(pl.col(key).alias("key"), pl.col("_content_hash").alias("hash"),
                            pl.col("_delivery_key").alias("dk"))
    first = narrow.filter(narrow["key"].is_first_distinct()).rename({"hash": "new_hash", "dk": "new_dk"})
    keys = first.join(existing, on="key", how="left").with_columns(
        bronze_wins=pl.col("old_dk").is_not_null() & (pl.col("old_dk") <= pl.col("new_dk")),
    ).with_columns(
        winner_hash=pl.when(pl.col("bronze_wins")).then(pl.col("old_hash")).otherwise(pl.col("new_hash")),
        # after the write, each key's bronze row is the winner's earliest delivery
        bronze_dk=pl.when(pl.col("bronze_wins")).then(pl.col("old_dk")).otherwise(pl.col("new_dk")),
    )
    tagged = narrow.join(keys.select("key", "winner_hash", "bronze_dk", "done"), on="key", how="left",
                         maintain_order="left").with_columns(is_winner=pl.col("hash") == pl.col("winner_hash"))
    masks = tagged.select(
        accepted=pl.col("is_winner") & (pl.col("is_winner").cast(pl.Int64).cum_sum().over("key") == 1)
        & ~pl.col("done").fill_null(False),
        conflicting=~pl.col("is_winner"),
        copy=pl.col("dk") != pl.col("bronze_dk"),
    )
    accepted = take(records, masks["accepted"])
    in_bronze_same = keys.filter(pl.col("old_hash").is_not_null() & (pl.col("old_hash") == pl.col("winner_hash")))
    existing_count = in_bronze_same.filter(pl.col("key").is_in(accepted[key].implode())).height
    return Resolution(
        accepted=accepted,
        conflicting=records.filter(masks["conflicting"]),
        duplicate_in_batch=int(tagged["is_winner"].sum()) - accepted.height,
        bronze_inserted=accepted.height - existing_count,
        bronze_existing=existing_count,
        bronze_kept=keys.filter(pl.col("bronze_wins"))["key"].to_list(),
        displaced=keys.filter(~pl.col("bronze_wins") & pl.col("old_hash").is_not_null()
                              & (pl.col("old_hash") != pl.col("new_hash")))["key"].to_list(),
        relineage=keys.filter(~pl.col("bronze_wins") & (pl.col("old_hash") == pl.col("new_hash")))["key"].to_list(),
        copies=records.filter(masks["copy"]),
    )
