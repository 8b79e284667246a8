"""Fault injection, crash, restart and load tests (see docs/reliability.md)."""
