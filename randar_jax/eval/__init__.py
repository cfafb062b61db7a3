"""Evaluation: FID, Inception Score, precision / recall, ADM sample files and the CFG-scale search.

    randar-jax eval samples.npz --ref VIRTUAL_imagenet256_labeled.npz --inception ckpt/inception
    randar-jax cfg-search --model ckpt/randar_l --tokenizer ckpt/vq --ref REF.npz --inception ckpt/inception \\
        --scales 2.0:8.0:0.2 --num-samples 10000 --final-samples 50000 --out runs/cfg

Modules: :mod:`.inception` (the FID InceptionV3), :mod:`.extractors` (the pluggable feature-extractor interface),
:mod:`.metrics` (Frechet distance, IS, precision / recall, streaming statistics), :mod:`.samples` (sample folders and
ADM ``.npz`` files), :mod:`.evaluate` (statistics of image sets, reference statistics, metrics),
:mod:`.cfg_search` (the resumable, multi-host scale search), :mod:`.commands` (CLI).
"""
