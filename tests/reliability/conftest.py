"""Fixtures of the reliability tests."""

from tests.reliability.disks import tmpfs  # noqa: F401  (a fixture)
