"""What data looks like: settings, dataset registry, contracts, tables, reason codes."""
