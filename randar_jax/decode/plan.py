"""The host-side decode plan: which slots every forward pass writes and which tokens it samples.

RandAR decodes in *generation order* j = 0..N-1 (cell ``order[j]``). In the KV cache the class token sits at
slot 0, the instruction token P_j at slot 2j+1 and the image token x_j at slot 2j+2 (the training layout).
Forward 0 feeds ``[cls, (P_j, x_j) for known j < m, P_m]``; every later forward feeds the tokens sampled by the
previous one, re-fed at their training slots, followed by the next queries:

    [x_q, P_{q+1}, x_{q+1}, ..., P_{q+n-1}, x_{q+n-1}, P_{q'}, ..., P_{q'+n'-1}]   written from slot 2q + 2

so the queries of one forward sit side by side and the next forward overwrites them with the training layout
(``docs/randar.md`` section 9). The number sampled per forward follows the cosine schedule
(:func:`query_counts`), which depends only on (N, steps, m), so the whole plan is NumPy, computed once, and
becomes static data for the compiled loop. Consecutive forwards are grouped into segments (one ``lax.scan``
each, every forward padded to the segment's width); pad entries come after the real ones, so the
causal-by-slot mask hides them and the next forward overwrites them. :func:`fit_plan` chooses the groups by
dynamic programming: fewest segments and tightest attention windows with at most 5 % padding
(:func:`build_plan` keeps the older bucket widths).

    plan = fit_plan(num_tokens=256, num_steps=88)              # 88 forwards, 707 slots fed for 674 needed
    plan.segments                                              # (Segment(width, window, rows...), ...)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

PAD, CLS, QUERY, TOKEN = 0, 1, 2, 3  # kinds of chunk entries


def query_counts(num_tokens: int, num_steps: int, start: int = 0) -> list[int]:
  """Tokens sampled per forward pass (the original's cosine schedule with the fixed loop bound).

  The first forward samples one token; after forward s (1-based) the target total is
  ``min(floor((1 - cos(pi/2 * (s+1)/T)) * N + 1), N)``. ``start`` known tokens precede (they count towards
  the target, so a long prefix makes the schedule lag: one token per forward until the target passes it).
  ``num_steps = -1`` means one token per forward. Every token from ``start`` to N-1 is sampled.
  """
  n_total = num_tokens
  steps = n_total if num_steps == -1 else num_steps
  if steps < 1:
    raise ValueError(f"num_steps must be >= 1 (or -1), got {num_steps}")
  if not 0 <= start < n_total:
    raise ValueError(f"need 0 <= known tokens < {n_total}, got {start}")
  counts, q, n, s = [], start, 1, 0
  while q <= n_total - n and q <= n_total - 1:
    counts.append(n)
    s += 1
    target = min(int((1 - math.cos(math.pi / 2 * (s + 1) / steps)) * n_total + 1), n_total)
    n_next = min(max(target - q - n, 1), n_total - q - n)
    q, n = q + n, n_next
  assert sum(counts) == n_total - start, (counts, start)
  return counts


@dataclasses.dataclass(frozen=True)
class Forward:
  """One forward pass: chunk entries written from slot ``start`` and the generation indices it samples."""

  start: int
  kinds: tuple[int, ...]  # PAD | CLS | QUERY (P_j) | TOKEN (x_j), per chunk entry
  gens: tuple[int, ...]  # generation index j of each entry (0 for PAD / CLS)
  samples: tuple[int, ...]  # generation indices sampled by this forward (its queries, in order)

  @property
  def length(self) -> int:
    return len(self.kinds)


def forwards(num_tokens: int, counts: Sequence[int], known: int = 0) -> list[Forward]:
  """The unpadded forward passes for per-forward sample counts, after ``known`` teacher-forced tokens."""
  first = counts[0]
  kinds = [CLS] + [QUERY, TOKEN] * known + [QUERY] * first
  gens = [0] + [j for j in range(known) for _ in (0, 1)] + list(range(known, known + first))
  out = [Forward(0, tuple(kinds), tuple(gens), tuple(range(known, known + first)))]
  q, n = known, first
  for nxt in counts[1:]:
    kinds, gens = [TOKEN], [q]
    for j in range(q + 1, q + n):
      kinds += [QUERY, TOKEN]
      gens += [j, j]
    q, n = q + n, nxt
    kinds += [QUERY] * n
    gens += list(range(q, q + n))
    out.append(Forward(2 * gens[0] + 2, tuple(kinds), tuple(gens), tuple(range(q, q + n))))
  assert q + n == num_tokens
  return out


@dataclasses.dataclass(frozen=True)
class Segment:
  """Consecutive forwards padded to one width, run by one ``lax.scan``. Arrays are (forwards, ...)."""

  width: int
  window: int  # cache slots [0, window) that these forwards can attend to
  start: tuple[int, ...]
  kinds: tuple[tuple[int, ...], ...]
  gens: tuple[tuple[int, ...], ...]
  out_pos: tuple[tuple[int, ...], ...]  # chunk positions of the queries, (forwards, the segment's max queries)
  out_gen: tuple[tuple[int, ...], ...]  # generation index sampled there; num_tokens (a trash column) if pad
  first_query: tuple[int, ...]  # generation index of the first query (guidance schedules use it)

  def arrays(self) -> dict[str, np.ndarray]:
    return {
      name: np.asarray(getattr(self, name), np.int32)
      for name in ("start", "kinds", "gens", "out_pos", "out_gen", "first_query")
    }


@dataclasses.dataclass(frozen=True)
class Plan:
  """A complete, hashable decode plan (static argument of the compiled loop)."""

  num_tokens: int
  num_steps: int
  known: int
  counts: tuple[int, ...]
  max_queries: int
  segments: tuple[Segment, ...]
  cache_slots: int

  @property
  def num_forwards(self) -> int:
    return len(self.counts)

  @property
  def slots_fed(self) -> int:
    """Chunk entries actually computed, padding included."""
    return sum(seg.width * len(seg.start) for seg in self.segments)

  @property
  def slots_min(self) -> int:
    """Chunk entries the schedule needs (no padding): the floor for ``slots_fed``."""
    return sum(sum(kind != PAD for kind in row) for seg in self.segments for row in seg.kinds)

  @property
  def query_rows(self) -> int:
    """Query positions run through the head and the sampler, padding included (the floor is num_tokens)."""
    return sum(len(seg.out_pos[0]) * len(seg.start) for seg in self.segments)


def _segment(group: list[Forward], width: int, window: int, num_tokens: int) -> Segment:
  max_queries = max(len(f.samples) for f in group)  # per segment: the head runs on no more than it must
  kinds, gens, out_pos, out_gen = [], [], [], []
  for f in group:
    pad = width - f.length
    kinds.append(f.kinds + (PAD,) * pad)
    gens.append(f.gens + (0,) * pad)
    queries = tuple(range(f.length - len(f.samples), f.length))
    out_pos.append(queries + (queries[-1],) * (max_queries - len(queries)))
    out_gen.append(f.samples + (num_tokens,) * (max_queries - len(f.samples)))
  return Segment(
    width,
    window,
    tuple(f.start for f in group),
    tuple(kinds),
    tuple(gens),
    tuple(out_pos),
    tuple(out_gen),
    tuple(f.samples[0] for f in group),
  )


def schedule(num_tokens: int, num_steps: int, known: int, lagging: bool) -> tuple[list[int], list[Forward]]:
  """Per-forward sample counts and the unpadded forwards (``known`` and ``lagging`` as in :func:`build_plan`)."""
  counts = query_counts(num_tokens, num_steps, known) if lagging else query_counts(num_tokens - known, num_steps)
  return counts, forwards(num_tokens, counts, known)


def build_plan(
  num_tokens: int,
  num_steps: int,
  known: int = 0,
  buckets: Sequence[int] | None = None,
  slot_multiple: int = 8,
  windows: int = 4,
  lagging: bool = False,
) -> Plan:
  """Pads the forwards of a schedule into segments and sizes the cache.

  With ``known`` teacher-forced tokens, the cosine schedule runs over the N - known unknown tokens (so
  ``num_steps`` forwards decode them), unless ``lagging``: then it runs over all N with the known ones
  counted as decoded, as the original resolution extrapolation does (one token per forward until the
  target passes the prefix).

  ``buckets``: allowed chunk widths. Each forward is padded to the smallest bucket that fits it and that is
  not smaller than the previous forward's width (monotone, so equal widths form contiguous segments);
  None or () pads everything to the longest forward. Segments are further split so that each attends to
  a static window of the cache (``windows`` steps of cache_slots / windows): early forwards read fewer
  slots. The prefill forward (with ``known`` tokens) is its own segment.
  """
  counts, passes = schedule(num_tokens, num_steps, known, lagging)
  head, body = ([passes[0]], passes[1:]) if known else ([], passes)
  widths = [passes[0].length] if head else []
  if body:
    longest = max(f.length for f in body)
    allowed = sorted(set(b for b in (buckets or ()) if b < longest) | {longest})
    for f in body:
      width = min(w for w in allowed if w >= f.length)
      widths.append(max(width, widths[-1]) if len(widths) > len(head) else width)  # monotone within the body
  return pack(
    passes,
    widths,
    num_tokens,
    num_steps,
    known,
    separate_first=bool(head),
    slot_multiple=slot_multiple,
    windows=windows,
  )


def pack(
  passes: Sequence[Forward],
  widths: Sequence[int],
  num_tokens: int,
  num_steps: int,
  known: int = 0,
  *,
  separate_first: bool = False,
  slot_multiple: int = 8,
  windows: int = 4,
) -> Plan:
  """Groups forwards padded to ``widths`` into segments (equal width and attention window, consecutive) and
  sizes the cache to a multiple of ``slot_multiple`` that holds every chunk. Each segment attends to a static
  window (``windows`` steps of cache_slots / windows), so early forwards read fewer slots.
  ``separate_first``: the first forward (a prefill) gets a segment of its own."""
  counts = [len(f.samples) for f in passes]
  ends = [f.start + w for f, w in zip(passes, widths)]
  slots = -(-max(ends) // slot_multiple) * slot_multiple
  step = -(-slots // (windows * slot_multiple)) * slot_multiple
  groups: list[tuple[tuple[int, int], list[Forward]]] = []
  for i, (f, width, end) in enumerate(zip(passes, widths, ends)):
    key = (width, min(slots, -(-end // step) * step))
    if groups and groups[-1][0] == key and not (separate_first and i == 1):
      groups[-1][1].append(f)
    else:
      groups.append((key, [f]))
  segments = tuple(_segment(g, w, win, num_tokens) for (w, win), g in groups)
  return Plan(num_tokens, num_steps, known, tuple(counts), max(counts), segments, slots)


def default_buckets(num_tokens: int, num_steps: int) -> tuple[int, ...]:
  """Bucket widths for the fast path: 2 (single-token forwards) plus two wider buckets (see bench_decode)."""
  longest = max(f.length for f in forwards(num_tokens, query_counts(num_tokens, num_steps)))
  return tuple(sorted({2, max(2, (longest + 1) // 2 + 1), longest}))


def fit_groups(
  passes: Sequence[Forward],
  slack: float = 0.05,
  window_cost: float = 1 / 128,
  segment_cost: float = 8.0,
  slot_multiple: int = 8,
) -> list[tuple[int, int]]:
  """Consecutive groups [i, j) of forwards, each padded to its longest and attending to the slots its last
  chunk can reach (rounded up to ``slot_multiple``), minimising an estimated cost (in fed slots)

      slots fed + window_cost * cache slots read + segment_cost * segments

  subject to slots fed <= (1 + slack) * the unpadded total. A segment is one more scan body to compile (and a
  few more kernel launches); a window slot is a key and a value read by every fed slot (``window_cost``: its
  price relative to a fed slot's matmuls, about 1/128 for a 512-wide model). Dynamic programming over
  (forwards covered, padding spent): exact, O(forwards^2 * budget) with early exit once a group's padding
  exceeds the budget.
  """
  lengths = [f.length for f in passes]
  budget = int(slack * sum(lengths))
  n = len(passes)
  best = np.full((n + 1, budget + 1), np.inf)
  best[0, 0] = 0.0
  back: dict[tuple[int, int], tuple[int, int]] = {}
  for j in range(1, n + 1):
    width = fed = 0
    for i in range(j - 1, -1, -1):  # the group [i, j), grown backwards
      width = max(width, lengths[i])
      fed += lengths[i]
      pad = width * (j - i) - fed
      if pad > budget:
        break
      window = -(-(passes[j - 1].start + width) // slot_multiple) * slot_multiple  # starts grow: the last reaches

      cost = segment_cost + (j - i) * (width + window_cost * window)
      candidate = best[i, : budget + 1 - pad] + cost
      better = candidate < best[j, pad:]
      if better.any():
        best[j, pad:][better] = candidate[better]
        for p in np.flatnonzero(better):
          back[j, int(p) + pad] = (i, int(p))
  pad = int(np.argmin(best[n]))
  assert np.isfinite(best[n, pad]), "one forward per group is always feasible"
  groups, j = [], n
  while j:
    i, pad = back[j, pad]
    groups.append((i, j))
    j = i
  return groups[::-1]


def fit_plan(
  num_tokens: int,
  num_steps: int,
  known: int = 0,
  lagging: bool = False,
  slack: float = 0.05,
  slot_multiple: int = 8,
) -> Plan:
  """The schedule's forwards grouped by :func:`fit_groups`: at most ``slack`` padding (exact widths where the
  lengths vary too much), each segment attending to the cache slots it can reach. See :func:`build_plan` for
  ``known`` and ``lagging``."""
  counts, passes = schedule(num_tokens, num_steps, known, lagging)
  groups = fit_groups(passes, slack, slot_multiple=slot_multiple)
  widths = [max(f.length for f in passes[i:j]) for i, j in groups for _ in range(i, j)]
  ends = [f.start + w for f, w in zip(passes, widths)]
  slots = -(-max(ends) // slot_multiple) * slot_multiple
  segments = []
  for i, j in groups:
    window = min(slots, -(-max(ends[i:j]) // slot_multiple) * slot_multiple)
    segments.append(_segment(list(passes[i:j]), widths[i], window, num_tokens))
  return Plan(num_tokens, num_steps, known, tuple(counts), max(counts), tuple(segments), slots)
