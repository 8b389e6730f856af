"""Dataset loading, the evaluation protocol (dedupe, 5-core, leave-one-out split) and the SQLite catalog."""
