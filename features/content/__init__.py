"""Content embeddings of items: image, text and fused vectors in one space."""
