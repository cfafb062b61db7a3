"""The generator architectures: LLaMA-style blocks and 2D RoPE shared by RandAR and LlamaGen, RAR's adaLN ViT,
attention and the KV cache, and the layers they are built from. The registry of families (name -> config,
model, converter, decoder) is :mod:`randar_jax.families`."""
