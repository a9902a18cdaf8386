"""Table contracts and feature math: pure functions, no I/O, no orchestration."""
