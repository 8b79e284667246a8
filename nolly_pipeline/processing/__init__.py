"""Pure media processing: no Dagster imports, usable and testable on its own."""
