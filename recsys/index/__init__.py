"""FAISS item index: exact inner product for small catalogues, HNSW above a configurable size."""
