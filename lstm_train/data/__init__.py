"""Datasets as tensors: the prepared-data store (`store/`), each task's stream (`streams/`), the file
formats users bring (`readers/`), and the in-memory datasets (MNIST, series, digit strips, parallel text)."""
