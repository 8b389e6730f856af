"""The services: reading a run (run), rebuilding its model (loading), the recommender contract, and what answers
questions about a run (session, evaluation, export, slices, compare, diagnostics, bench, memory)."""
