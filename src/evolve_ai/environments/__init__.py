"""Environments: where agents are given tasks and scored."""
