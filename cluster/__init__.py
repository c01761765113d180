"""raftlog.cluster."""
