"""The on-disk formats of cmhash, one module each, torch-free (docs/FORMATS.md indexes the specs).

Each module owns one format and has exactly one reader and one writer; the zoo, the exporter and
the runtime read and write files only through them. The package imports only cmhash.errors,
cmhash.runtime.io, numpy and the standard library (third-party readers inside functions), so every
layer can import it and the dependency arrows stay one way. One exception: codes_file.py uses
cmhash.runtime.codes (a leaf: numpy and cmhash.errors), the one definition of the packed-code layout.

- manifest.py: file integrity (sha256 + size), for checkpoints, the Hub and exports;
- checkpoint.py: a trained hasher's folder (config.json, model.safetensors, vocabulary.json);
- vocabulary.py: a bag-of-words tower's vocabulary.json (checkpoints and exports);
- export_manifest.py: an export folder's export.json;
- codes_file.py: encoded items (codes.npz);
- index_file.py: a Hamming index file;
- sharded_index.py: a sharded index folder's index.json (its shards are index files);
- engine_sidecar.py: a TensorRT engine's sidecar JSON;
- model_id.py: the identity of the model that made a set of codes (recorded in codes and index files).
"""
