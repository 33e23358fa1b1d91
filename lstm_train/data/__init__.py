"""Datasets as tensors: IDX files, MNIST-style images, series, digit strips."""
