"""Memory predicted before big allocations, so a too-large request is one line instead of an allocation traceback.

    need = generator_bytes(config, batch=32, tokens=config.num_tokens, guided=True)
    check_fits(need, "sampling", batch=32)     # ValueError: sampling needs ~X GB, the device has Y GB; try ...

Estimates are upper bounds of the largest live buffers (KV cache, one layer's attention scores, logits; a
tokenizer's widest activation and its mid-block attention), not exact figures: they catch requests that are
orders of magnitude too big (a 42 TB canvas, a 26 GB tokenizer batch), not ones a few percent over.
"""

from __future__ import annotations

import os

F32 = 4


def available_bytes() -> tuple[int, str]:
  """(bytes free for one computation, what they are): the first local device's free memory where it reports its
  memory statistics (GPU / TPU), otherwise the host's available RAM (CPU)."""
  import jax

  device = jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"the {device.platform.upper()} has"
  return _host_available(), "the host has"


def _host_available() -> int:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gb(n: float) -> str:
  gb = n / 2**30
  return f"{gb:,.0f}" if gb >= 10 else f"{gb:.2g}"


def check_fits(needed: float, what: str, *, batch: int | None = None, flag: str = "--batch-size") -> None:
  """Raises ValueError when ``needed`` bytes exceed what the device has; suggests the largest ``batch`` that fits
  (``needed`` is taken as proportional to the batch)."""
  have, where = available_bytes()
  if needed <= have:
    return
  hint = ""
  if batch is not None and batch > 1:
    fits = int(batch * have // needed)
    hint = f"; try {flag} {fits}" if fits >= 1 else "; even one item does not fit"
  raise ValueError(f"{what} needs ~{_gb(needed)} GB, {where} {_gb(have)} GB{hint}")


def generator_bytes(config, *, batch: int, tokens: int, guided: bool = False) -> float:
  """A generator decoding ``tokens`` positions for ``batch`` images: KV cache of every layer, one layer's attention
  scores over the whole sequence (dense prefill / known-token passes), logits; guidance doubles the batch."""
  rows = batch * (2 if guided else 1)
  heads = getattr(config, "n_kv_head", None) or config.n_head
  kv = 2 * config.n_layer * rows * tokens * heads * config.head_dim * F32
  scores = rows * config.n_head * tokens * tokens * F32
  logits = rows * tokens * config.vocab_size * F32
  return float(kv + scores + logits)


def tokenizer_bytes(tokenizer, *, batch: int, height: int, width: int) -> float:
  """A VQ tokenizer (a ``tokenizers.TokenizerInfo``) encoding / decoding ``batch`` images of height x width: its
  full-resolution activations (a few live copies) and the single-head attention of its middle block at the
  latent resolution. Zero for a tokenizer without a network (``hidden == 0``)."""
  if not tokenizer.hidden:
    return float(batch * height * width * F32)
  latent = (height // tokenizer.downsample) * (width // tokenizer.downsample)
  activations = 4 * batch * height * width * tokenizer.hidden * F32
  attention = 3 * batch * latent * latent * F32
  return float(activations + attention)
