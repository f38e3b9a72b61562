"""kws: a fast, faithful command-line trainer for keyword spotting."""

__version__ = "0.1.0"
