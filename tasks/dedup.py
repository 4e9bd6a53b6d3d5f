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

EXISTING_SCHEMA = {"key": pl.String, "old_hash": pl.String, "old_dk": pl.String}


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


def first_versions(records: pl.DataFrame, key: str) -> pl.DataFrame:
    """The batch's earliest record of each event key (what gets staged against bronze)."""
    return records.sort("_delivery_key").unique(subset=[key], keep="first", maintain_order=True)


def resolve_versions(records: pl.DataFrame, existing: pl.DataFrame, key: str) -> Resolution:
    """Apply the earliest-delivery rule to a batch's valid records against existing bronze versions."""
    records = records.sort("_delivery_key")
    first = first_versions(records, key).select(pl.col(key).alias("key"), pl.col("_content_hash").alias("new_hash"),
                                                pl.col("_delivery_key").alias("new_dk"))
    keys = first.join(existing, on="key", how="left").with_columns(
        bronze_wins=pl.col("old_dk").is_not_null() & (pl.col("old_dk") <= pl.col("new_dk")),
    ).with_columns(
        winner_hash=pl.when(pl.col("bronze_wins")).then(pl.col("old_hash")).otherwise(pl.col("new_hash")),
    )
    tagged = records.join(keys.select(pl.col("key").alias(key), "winner_hash"), on=key, how="left",
                          maintain_order="left")
    is_winner = pl.col("_content_hash") == pl.col("winner_hash")
    winning = tagged.filter(is_winner)
    accepted = winning.unique(subset=[key], keep="first", maintain_order=True)
    conflicting = tagged.filter(~is_winner).drop("winner_hash")

    # after the write, each key's bronze row is the winner's earliest delivery
    bronze_dk = keys.select(pl.col("key").alias(key), pl.when(pl.col("bronze_wins")).then(pl.col("old_dk"))
                            .otherwise(pl.col("new_dk")).alias("_delivery_key"))
    copies = records.join(bronze_dk, on=[key, "_delivery_key"], how="anti", maintain_order="left")
    in_bronze_same = keys.filter(pl.col("old_hash").is_not_null() & (pl.col("old_hash") == pl.col("winner_hash")))
    accepted_keys = accepted[key]
    existing_count = in_bronze_same.filter(pl.col("key").is_in(accepted_keys.implode())).height
    return Resolution(
        accepted=accepted.drop("winner_hash"),
        conflicting=conflicting,
        duplicate_in_batch=winning.height - accepted.height,
        bronze_inserted=accepted.height - existing_count,
        bronze_existing=existing_count,
        bronze_kept=keys.filter(pl.col("bronze_wins"))["key"].to_list(),
        displaced=keys.filter(~pl.col("bronze_wins") & pl.col("old_hash").is_not_null()
                              & (pl.col("old_hash") != pl.col("new_hash")))["key"].to_list(),
        relineage=keys.filter(~pl.col("bronze_wins") & (pl.col("old_hash") == pl.col("new_hash")))["key"].to_list(),
        copies=copies,
    )
