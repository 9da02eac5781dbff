"""TorchRec two-tower retrieval: features, towers, loss, training loop and the Recommender wrapper."""
