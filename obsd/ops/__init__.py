"""What the people who run obsd look at: status, history, logs, self-metrics."""
