"""Dispatch: the local worker pool, chunk sizing, the embedded run and the scheduler service."""
