"""What every generator shares: the config mixin (derived sizes and checks; the dict round trip with 'family'
comes from :class:`~randar_jax.config_io.FamilyConfig`) and the module mixin (the training contract:
``loss`` and ``weight_decay_mask``).

    @dataclasses.dataclass(frozen=True)
    class RARConfig(GeneratorConfig):
      FAMILY = "rar"
      dim: int = 1024
      ...
      def __post_init__(self):
        self.check_common()

    class RAR(Generator, nnx.Module):
      STACKED = "blocks"                             # the attribute holding the nnx.vmap-stacked blocks
      def __call__(self, tokens, labels, order, *, dropout_rng=None, ordered=False): ...   # (B, N, V)
      def decays(self, name, rank): ...              # the model's weight-decay rule
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from randar_jax.config_io import FamilyConfig
from randar_jax.models.layers import cross_entropy, unstack


class GeneratorConfig(FamilyConfig):
  """Mixin for frozen dataclasses with ``dim``, ``n_head``, ``grid_size`` and ``remat_policy`` fields."""

  def check_common(self) -> None:
    if self.dim % self.n_head:
      raise ValueError(f"dim {self.dim} is not divisible by n_head {self.n_head}")
    if not hasattr(jax.checkpoint_policies, self.remat_policy):
      raise ValueError(f"unknown remat_policy {self.remat_policy!r}; use a jax.checkpoint_policies name")

  @property
  def head_dim(self) -> int:
    return self.dim // self.n_head

  @property
  def num_tokens(self) -> int:
    return self.grid_size**2


class Generator:
  """Mixin for generator modules whose ``__call__(tokens, labels, order, *, dropout_rng, ordered)`` returns
  teacher-forced logits (B, N, V) in generation order."""

  STACKED: ClassVar[str]  # attribute name of the stacked blocks (their parameters carry a leading layer axis)

  def loss(
    self,
    tokens: jax.Array,
    labels: jax.Array,
    order: jax.Array,
    *,
    dropout_rng: jax.Array | None = None,
    ordered: bool = False,
  ) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy over the N predictions (float32) and the logits (B, N, V). tokens (B, N) raster
    (generation order if ``ordered``); ``dropout_rng`` turns on the training dropouts."""
    logits = self(tokens, labels, order, dropout_rng=dropout_rng, ordered=ordered)
    targets = tokens if ordered else jnp.take_along_axis(tokens, order, axis=1)
    return cross_entropy(logits, targets), logits

  def unstack_layers(self) -> None:
    """Replaces the stacked blocks by per-layer copies (``layers.unstack``), in place; for the decode program,
    which calls it inside its trace, before the loop over forwards."""
    setattr(self, self.STACKED, unstack(getattr(self, self.STACKED), self.config.n_layer))

  def decays(self, name: str, rank: int) -> bool:
    """Whether the parameter ``name`` ('a.b.c' path) of rank ``rank`` (without a layer axis) gets decay."""
    raise NotImplementedError

  def weight_decay_mask(self) -> dict:
    """Nested dict of bools shaped like ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``: True where the model's
    rule (``decays``) applies weight decay. Stacked block parameters are judged without their layer axis."""

    def leaf(path, p):
      return self.decays(".".join(str(k.key) for k in path), p.ndim - (path[0].key == self.STACKED))

    return jax.tree_util.tree_map_with_path(leaf, nnx.to_pure_dict(nnx.state(self, nnx.Param)))
