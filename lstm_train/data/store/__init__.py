"""The prepared-data store: a task's data tokenized once into an entry that every rank maps.

Four rooms:

- `entry_format`: the on-disk entry (`.npy` columns written in chunks);
- `runner`: a `Stream`'s two passes over pieces, on every core or as a SLURM job array;
- `prepared`: the store itself (an entry's key, lock, location, ensure, load);
- `trust`: what in a shared cache directory may be read.
"""
