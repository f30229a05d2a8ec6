"""Chunk workers: plain functions of picklable arguments, run on the process pool."""
