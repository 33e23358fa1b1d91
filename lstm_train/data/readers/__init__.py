"""Readers of the file formats users bring, strict about size and encoding: IDX, `.npy`/`.npz`,
images, CSV/TSV/JSON Lines text, the SST trees, CoNLL, GloVe/word2vec vectors."""
