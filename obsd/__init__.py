"""obsd: one place for a team's errors, metrics and logs."""

__version__ = "0.1.0"
