"""Ranking metrics, bootstrap intervals and the evaluation protocol."""
