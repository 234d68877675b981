"""GPU side: micro-batching, pixel normalisation and generation with a loaded model."""
