"""Data: latent-code extraction, token orders and the Grain training pipeline.

    orders.py      raster / random / RAR scan orders / RandAR hierarchical order, RAR annealing, ``OrderPolicy``
    records.py     ArrayRecord shards of codes (codec, resumable writer, ``CodeShards`` / ``ArraySource`` sources)
    extract.py     images (TFDS, class folders, tar) -> ADM or ten-crop -> tokenizer codes; RandAR .npy importer
    tfds_folder.py TF-free TFDS array_record builder for a local class-folder tree
    pipeline.py    Grain pipeline -> global batches {'tokens', 'positions', 'label', ...}, Orbax-checkpointable
    synthetic.py   planted-structure codes for tests and benchmarks

Typical use: ``randar-jax extract train/ codes/ --tokenizer ckpt/vq`` once, then
``Loader(open_source('codes/'), PipelineConfig(batch_size=1024), mesh)`` in training.
"""
