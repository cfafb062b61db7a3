"""Released checkpoints by name: download through the Hugging Face cache, convert once, reuse.

    randar-jax pull randar-l                      # download + convert; prints the checkpoint directory
    model = randar_jax.load_pretrained('rar-xl')  # the same, then checkpoint.load_model
    randar-jax sample randar-l --tokenizer vq-llamagen-16 --out samples --classes 0-9   # names work everywhere

Downloads go through ``huggingface_hub.hf_hub_download``, so ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``,
``HF_TOKEN`` and resumed downloads behave as for any hub model. The converted Orbax checkpoint lives beside the
download, in ``<hub cache>/randar_jax/<family>-<sha256 of the file>``: a file that changes converts again, and an
unchanged one is never converted twice. The one file not on the hub (pytorch-fid's Inception, a GitHub release)
is fetched once into ``<hub cache>/randar_jax/downloads``.

Every repository, file and score below was checked against the authors' READMEs (RandAR "Model Zoo", RAR
``README_RAR.md`` and its hf_hub_download demo, the LlamaGen README and hub file list) unless ``unconfirmed`` says
otherwise; sizes are the hub's where it listed them, else estimated from the parameter count (``~``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import urllib.request

from randar_jax.utils.files import atomic_path


@dataclasses.dataclass(frozen=True)
class Release:
  """One released checkpoint. ``fid``: the authors' ImageNet FID-50k for generators (at 256x256 evaluation), the
  reconstruction FID (rFID) for tokenizers; ``config``: the convert config (a recipe spec) when the tensor shapes
  alone do not give it; ``unconfirmed``: the fields that could not be checked against a source."""

  name: str
  family: str  # the family stored in the converted checkpoint ('randar', 'vq_llamagen', ...)
  repo: str  # Hugging Face model repository ('' for url files)
  filename: str
  params: int  # parameter count (the fixtures' full-size manifests; the Inception: our port's)
  resolution: int | None = None  # image size the model was trained at (px)
  tokenizer: str | None = None  # the catalogue name of the paired tokenizer
  fid: float | None = None
  cfg: float | None = None  # guidance scale of that FID (RandAR: the final scale of its linear schedule)
  config: str | None = None
  url: str | None = None  # direct download for files not on the hub
  size: str | None = None  # download size as the hub lists it (None: not seen; estimated from params)
  unconfirmed: tuple[str, ...] = ()

  @property
  def source(self) -> str:
    return self.url or f"hf://{self.repo}/{self.filename}"

  @property
  def download_size(self) -> str:
    return self.size or f"~{self.params * 4 / 1e9:.2f} GB"  # float32 tensors


TOKENIZERS = {"llamagen": "vq-llamagen-16", "maskgit": "maskgit-vqgan"}  # RandAR's tokenizer argument -> release


def _randar(name, filename, params, *, fid, cfg, variant, vocab) -> Release:
  return Release(
    name, "randar", "ziqipang/RandAR", filename, params, 256, TOKENIZERS[vocab], fid, cfg,
    config=f"randar:variant={variant},tokenizer={vocab}",
  )  # fmt: skip


def _rar(size_name, params, fid) -> Release:
  return Release(
    f"rar-{size_name.lower()}", "rar", "yucornetto/RAR", f"rar_{size_name.lower()}.bin", params, 256,
    "maskgit-vqgan", fid, config=f"rar:variant={size_name}",
  )  # fmt: skip


def _llamagen(size_name, res, params, fid, cfg, size=None, unconfirmed=()) -> Release:
  return Release(
    f"llamagen-{size_name.lower()}-{res}", "llamagen", "FoundationVision/LlamaGen", f"c2i_{size_name}_{res}.pt",
    params, res, "vq-llamagen-16", fid, cfg, config=f"llamagen:variant={size_name},image_size={res}", size=size,
    unconfirmed=unconfirmed,
  )  # fmt: skip


RELEASES: tuple[Release, ...] = (
  # RandAR model zoo (cosine schedule, 360k iterations; FID at the optimal CFG the README lists)
  _randar(
    "randar-l",
    "randar_0.3b_llamagen_360k_bs_1024_lr_0.0004.safetensors",
    342_912_000,
    fid=2.65,
    cfg=3.4,
    variant="L",
    vocab="llamagen",
  ),
  _randar(
    "randar-l-maskgit",
    "randar_0.3b_maskgit_360k_bs_1024_lr_0.0004.safetensors",
    311_454_720,
    fid=2.47,
    cfg=4.0,
    variant="L",
    vocab="maskgit",
  ),
  _randar(
    "randar-xl",
    "randar_0.7b_llamagen_360k_bs_1024_lr_0.0004.safetensors",
    774_700_800,
    fid=2.27,
    cfg=4.0,
    variant="XL",
    vocab="llamagen",
  ),
  # RAR (README_RAR.md model zoo; the guidance is the per-size default of the RAR decoder)
  _rar("B", 260_923_648, 1.95),
  _rar("L", 461_668_352, 1.70),
  _rar("XL", 955_425_024, 1.50),
  _rar("XXL", 1_498_520_704, 1.48),
  # LlamaGen class-conditional (README table; cfg of the FID commands in GETTING_STARTED.md)
  _llamagen("B", 256, 110_888_448, 5.46, 2.0, size="444 MB"),
  _llamagen("B", 384, 110_888_448, 6.09, 2.0, size="444 MB", unconfirmed=("fid",)),
  _llamagen("L", 256, 342_910_976, 3.80, 2.0, size="1.37 GB", unconfirmed=("fid",)),
  _llamagen("L", 384, 342_910_976, 3.07, 2.0, size="1.37 GB"),
  _llamagen("XL", 384, 774_699_520, 2.62, 1.75),
  _llamagen("XXL", 384, 1_410_972_672, 2.34, 1.75),
  _llamagen("3B", 384, 3_096_659_200, 2.18, 1.65, size="12.4 GB"),
  # tokenizers (fid = the reconstruction FID at 256) and the FID network
  Release("vq-llamagen-16", "vq_llamagen", "FoundationVision/LlamaGen", "vq_ds16_c2i.pt", 71_883_403, 256, fid=2.19),
  Release("maskgit-vqgan", "vq_maskgit", "fun-research/TiTok", "maskgit-vqgan-imagenet-f16-256.bin", 54_515_587, 256),
  Release(
    "inception-fid",
    "inception_fid",
    "",
    "pt_inception-2015-12-05-6726825d.pth",
    23_885_392,
    299,
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
  ),
)
CATALOGUE: dict[str, Release] = {r.name: r for r in RELEASES}


def get(name: str) -> Release:
  """The release called ``name``; an unknown name is an error that lists the close ones."""
  if name not in CATALOGUE:
    close = difflib.get_close_matches(name, CATALOGUE, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise FileNotFoundError(
      f"{name!r} is neither a checkpoint directory nor a released model ({hint}list them: randar-jax pull --list)"
    )
  return CATALOGUE[name]


def cache_root(cache_dir: str | os.PathLike | None = None) -> str:
  """Where converted checkpoints go: ``randar_jax/`` inside the Hugging Face hub cache (HF_HOME, HF_HUB_CACHE)."""
  from huggingface_hub import constants

  return os.path.join(os.fspath(cache_dir or constants.HF_HUB_CACHE), "randar_jax")


def download(release: Release, cache_dir: str | os.PathLike | None = None) -> str:
  """The local path of the release's file, downloaded into the hub cache unless already there."""
  import huggingface_hub
  from huggingface_hub import errors

  offline_hint = f"run `randar-jax pull {release.name}` once with network access (HF_HUB_OFFLINE is set)"
  if release.url:
    path = os.path.join(cache_root(cache_dir), "downloads", release.filename)
    if not os.path.isfile(path):
      if huggingface_hub.is_offline_mode():
        raise FileNotFoundError(f"{release.name}: {release.filename} is not in {os.path.dirname(path)}; {offline_hint}")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with atomic_path(path) as tmp:
        urllib.request.urlretrieve(release.url, tmp)
    return path
  try:
    return huggingface_hub.hf_hub_download(release.repo, release.filename, cache_dir=cache_dir)
  except errors.LocalEntryNotFoundError:
    where = "the Hugging Face cache" if cache_dir is None else os.fspath(cache_dir)
    if huggingface_hub.is_offline_mode():
      raise FileNotFoundError(f"{release.name}: {release.filename} is not in {where}; {offline_hint}") from None
    raise FileNotFoundError(
      f"{release.name}: cannot download {release.source} (no connection?) and it is not in {where}"
    ) from None
  except errors.HfHubHTTPError as e:  # gated / missing repository, bad token: the hub's own first line
    raise FileNotFoundError(f"{release.name}: {release.source}: {str(e).splitlines()[0]}") from None


def file_sha256(path: str | os.PathLike, memo_dir: str) -> str:
  """The file's SHA-256, remembered per (real path, size, mtime) so that a large file is hashed once."""
  real = os.path.realpath(path)
  stat = os.stat(real)
  key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
  memo_path = os.path.join(memo_dir, "sha256.json")
  memo = json.load(open(memo_path)) if os.path.isfile(memo_path) else {}
  if key not in memo:
    digest = hashlib.sha256()
    with open(real, "rb") as f:
      for block in iter(lambda: f.read(1 << 24), b""):
        digest.update(block)
    memo[key] = digest.hexdigest()
    os.makedirs(memo_dir, exist_ok=True)
    with atomic_path(memo_path) as tmp, open(tmp, "w") as f:
      json.dump(memo, f, indent=0)
  return memo[key]


def pull(name: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> str:
  """Downloads (if needed) and converts (if not yet done for this file's content) the release ``name``; returns
  its Orbax checkpoint directory."""
  from randar_jax import convert

  release = get(name)
  path = download(release, cache_dir)
  root = cache_root(cache_dir)
  out = os.path.join(root, f"{release.family}-{file_sha256(path, root)[:20]}")
  if not os.path.isdir(out):  # atomic_path: the directory exists only once complete
    config = convert.config_from_spec(release.config) if release.config else None
    with atomic_path(out) as tmp:
      convert.convert_checkpoint(path, tmp, config, progress=progress)
  return out


def resolve(name_or_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> str:
  """A checkpoint directory (or file) that exists is returned as is; a release name is pulled and its converted
  directory returned; anything else is a clear FileNotFoundError."""
  path = os.fspath(name_or_dir)
  if os.path.exists(path):
    return path
  if path in CATALOGUE:
    return pull(path, cache_dir=cache_dir)
  if os.sep not in path and difflib.get_close_matches(path, CATALOGUE, n=1):
    get(path)  # a misspelt name: the error suggests the close ones
  return path


def is_release(name: str | os.PathLike) -> bool:
  return os.fspath(name) in CATALOGUE


def describe(release: Release) -> str:
  """One line for ``randar-jax pull --list``."""
  score = "" if release.fid is None else f"{'rFID' if release.family.startswith('vq_') else 'FID'} {release.fid}"
  parts = [
    f"{release.name:18s}",
    f"{release.family:13s}",
    f"{release.resolution or '':>4}px",
    f"{release.params / 1e6:8.1f}M",
    f"{release.download_size:>9s}",
    f"{score:10s}",
    f"tokenizer {release.tokenizer}" if release.tokenizer else "",
    release.source,
  ]
  note = f"  (unconfirmed: {', '.join(release.unconfirmed)})" if release.unconfirmed else ""
  return "  ".join(p for p in parts if p) + note
