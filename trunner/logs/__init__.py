"""The per-job log pipeline: bytes -> lines -> outcome variables -> masking -> prefix -> batches."""
