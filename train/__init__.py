"""hilif.train: shards -> batches -> two-stage training, and evaluation."""
