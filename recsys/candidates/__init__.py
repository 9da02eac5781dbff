"""Candidate generation: several retrieval sources merged into one list per user, with provenance."""
