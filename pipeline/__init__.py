"""hilif.pipeline: benchmark datasets as shipped -> decoded frames -> aligned faces -> WebDataset shards."""
