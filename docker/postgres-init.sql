-- Second database on the compose PostgreSQL: `dagster` (POSTGRES_DB) holds Dagster's own
-- storage, `nolly` holds the seed's `jobs` and `notifications`. They cannot share a schema:
-- Dagster's schedule storage has a table named `jobs` as well.
CREATE DATABASE nolly;
