"""raftlog.proto."""
