"""Each task's data preparation as a `Stream` (the contract in `base`): a corpus cut into pieces,
scanned and encoded in two passes by the store's runner.

`language_model` (text files as one token column), `text_classify` (CSV/TSV/JSONL/Parquet/
datasets and SST, with its column kernels in `table_columns`, `table_read` and `table_words`)
and `tag` (CoNLL-U and whitespace-column files).
"""
