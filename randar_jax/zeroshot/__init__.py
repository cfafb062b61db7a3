"""Zero-shot applications of a random-order model: editing around known tokens, resolution extrapolation and
bidirectional features. Token-level functions live in ``known``, ``extrapolate`` and ``features``; the
image-level API (tokenizer in, pictures out) in ``editing``."""
