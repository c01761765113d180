"""raftlog.chaos."""
