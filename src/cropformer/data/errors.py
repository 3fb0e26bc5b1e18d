"""The error of a sample that cannot be read (lowest floor of the data package)."""

from __future__ import annotations


class SampleError(ValueError):
    """A sample cannot be read; the message names the file and what to do."""
