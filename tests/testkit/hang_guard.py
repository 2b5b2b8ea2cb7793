"""The only time limit a test may put on a subprocess or a wait: long enough to catch a hang, never a slow machine.

The suite must pass on a loaded machine (docs/testing.md): a subprocess that takes 20 s idle can take ten times
that when other processes share the cores, so no test asserts on how long anything took.
"""
HANG_S = 1800
"""Seconds after which a subprocess or a polled condition counts as hung."""
