"""Learning-to-rank models that reorder candidates."""
