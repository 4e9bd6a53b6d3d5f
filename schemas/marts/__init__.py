"""The shipped mart models: one DuckDB SQL file per mart (FACTORY_MARTS_DIR points elsewhere for your own)."""
