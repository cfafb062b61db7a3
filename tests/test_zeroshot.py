"""Zero-shot applications at the token level: extrapolation parity, generation around known tokens, features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fixture_file, randar_model
from randar_jax.decode import plan as plan_lib
from randar_jax.decode.randar import generate
from randar_jax.decode.sampling import Guidance, Sampling
from randar_jax.models import rope
from randar_jax.zeroshot.extrapolate import anchor_cells, extrapolate
from randar_jax.zeroshot.features import bidirectional_features
from randar_jax.zeroshot.known import generate_with_known, token_mask_from_pixels

GREEDY = Sampling.make(top_k=1)


@pytest.fixture(scope="module")
def extrapolation(fixtures):
  data = np.load(fixture_file(fixtures, "extrapolation_rope.npz"))
  return {k: data[k] for k in data}


def test_extrapolation_rope_tables(extrapolation):
  grid, head_dim, base, cls_tokens, factor, ntk = extrapolation["extrapolation_args"]
  table = rope.with_class_rows(
    rope.extrapolated_rope_table(int(grid), int(head_dim), base, factor, int(ntk)), int(cls_tokens)
  )
  np.testing.assert_allclose(table, extrapolation["extrapolation_freqs_cis"], atol=1e-6, rtol=0)
  grid, head_dim, base, cls_tokens = extrapolation["base_args"]
  table = rope.with_class_rows(rope.rope_table(int(grid), int(head_dim), base), int(cls_tokens))
  np.testing.assert_allclose(table, extrapolation["base_freqs_cis"], atol=1e-6, rtol=0)


def test_extrapolation_matches_original_and_samples_every_token(fixtures, extrapolation):
  g = {k[len("gen/") :]: v for k, v in extrapolation.items() if k.startswith("gen/")}
  model, config = randar_model(fixtures, str(g["model_file"]))  # the model the original run used
  factor = int(g["extrapolation_factor"])
  out = extrapolate(
    model,
    g["cond"],
    jax.random.key(0),
    factor=factor,
    num_steps=int(g["num_inference_steps"]),
    guidance=Guidance.from_original(g["cfg_scales"]),
    ntk_boundary=int(g["ntk_boundary"]),
    order=g["token_order"],
    trace=True,
    sampling=Sampling.make(float(g["temperature"]), int(g["top_k"]), float(g["top_p"])),
  )
  np.testing.assert_array_equal(out.low_res.order, g["low_res_token_order"])
  np.testing.assert_array_equal(out.low_res.tokens, g["low_res_indices"])
  np.testing.assert_allclose(out.low_res.trace.guided, g["low_res_step_logits"], atol=2e-4, rtol=1e-4)
  n_low, sampled = g["low_res_token_order"].shape[1], g["high_res_step_logits"].shape[1]
  np.testing.assert_allclose(
    np.asarray(out.high_res.trace.guided)[:, n_low : n_low + sampled], g["high_res_step_logits"], atol=2e-4, rtol=1e-4
  )
  ours = np.asarray(out.high_res.tokens_in_order)
  reference = np.take_along_axis(g["result_indices"], g["token_order"], axis=1)
  mask = g["sampled_mask_in_generation_order"]
  np.testing.assert_array_equal(ours[mask], reference[mask])
  # The original never samples its last chunk (left at code 0); we must sample it.
  assert (~mask).sum() > 0, "the fixture documents the original's unsampled tail"
  n = g["token_order"].shape[1]
  counts = plan_lib.query_counts(n, int(g["num_inference_steps"]), n_low)
  assert counts[: len(g["high_res_query_counts"])] == g["high_res_query_counts"].tolist()
  assert sum(counts) == n - n_low, "every high-resolution token is sampled"
  assert np.asarray(out.high_res.trace.guided)[:, n_low:][~mask[:, n_low:]].any(axis=-1).all()


def test_extrapolation_spatial_guidance_and_errors(randar_tiny):
  model, config = randar_tiny
  labels = np.array([1, 2])
  base = extrapolate(model, labels, jax.random.key(1), num_steps=6, guidance=Guidance.constant(3.0), sampling=GREEDY)
  spatial = extrapolate(
    model, labels, jax.random.key(1), num_steps=6, guidance=Guidance.constant(3.0), spatial=(2.5, 2.5), sampling=GREEDY
  )
  n = (config.grid_size * 2) ** 2
  assert spatial.tokens.shape == (2, n)
  np.testing.assert_array_equal(spatial.low_res.tokens, base.low_res.tokens)  # stage 1 has no spatial branch
  assert not np.array_equal(spatial.tokens, base.tokens)
  anchors = anchor_cells(config.grid_size * 2, 2)
  assert anchors[np.asarray(spatial.order)[:, : config.num_tokens]].all()
  with pytest.raises(ValueError, match="spatial guidance needs class guidance"):
    extrapolate(model, labels, jax.random.key(0), spatial=(2.0, 2.0))
  with pytest.raises(ValueError, match="integer >= 2"):
    extrapolate(model, labels, jax.random.key(0), factor=1)
  with pytest.raises(ValueError, match="anchor cells first"):
    extrapolate(model, labels, jax.random.key(0), order=np.tile(np.arange(n), (2, 1)))


def _tokens(config, batch, seed=0):
  return np.random.default_rng(seed).integers(0, config.vocab_size, (batch, config.num_tokens))


def test_known_tokens_are_kept_with_ragged_masks(randar_tiny):
  model, config = randar_tiny
  tokens = _tokens(config, 3)
  generate_mask = np.zeros_like(tokens, bool)
  generate_mask[0, :5] = True  # 11 known
  generate_mask[1, ::2] = True  # 8 known
  generate_mask[2, :] = True  # nothing known
  out = generate_with_known(
    model,
    tokens,
    generate_mask,
    np.array([1, 2, 3]),
    jax.random.key(0),
    num_steps=4,
    guidance=Guidance.linear(1.0, 3.0),
  )
  result = np.asarray(out.tokens)
  np.testing.assert_array_equal(result[~generate_mask], tokens[~generate_mask])
  known_first = ~np.take_along_axis(generate_mask, np.asarray(out.order), axis=1)
  assert all((row[: row.sum()]).all() for row in known_first), "known cells lead the order"


def test_all_known_returns_input_and_nothing_known_is_plain_sampling(randar_tiny):
  model, config = randar_tiny
  tokens, labels = _tokens(config, 2), np.array([3, 4])
  same = generate_with_known(model, tokens, np.zeros_like(tokens, bool), labels, jax.random.key(0))
  np.testing.assert_array_equal(same.tokens, tokens)
  key = jax.random.key(7)
  free = generate_with_known(model, tokens, np.ones_like(tokens, bool), labels, key, num_steps=5)
  plain = generate(model, labels, key, num_steps=5)
  np.testing.assert_array_equal(free.tokens, plain.tokens)
  np.testing.assert_array_equal(free.order, plain.order)


def test_known_input_errors(randar_tiny):
  model, config = randar_tiny
  tokens = _tokens(config, 2)
  with pytest.raises(ValueError, match="mask must be boolean with the tokens' shape"):
    generate_with_known(model, tokens, np.ones((2, 3), bool), np.array([0, 1]), jax.random.key(0))
  with pytest.raises(ValueError, match="tokens must have shape"):
    generate_with_known(
      model, tokens[:, :-1], np.ones((2, config.num_tokens - 1), bool), np.array([0, 1]), jax.random.key(0)
    )
  with pytest.raises(ValueError, match="codes in"):
    generate_with_known(
      model, tokens + config.vocab_size, np.ones_like(tokens, bool), np.array([0, 1]), jax.random.key(0)
    )


def test_pixel_mask_rule():
  mask = np.zeros((32, 48), np.uint8)
  mask[15, 16] = 255  # one pixel in token (0, 1)
  mask[20:, 40:] = 1  # the bottom-right corner block -> token (1, 2)
  np.testing.assert_array_equal(token_mask_from_pixels(mask, 16), [[False, True, False], [False, False, True]])
  with pytest.raises(ValueError, match="not a multiple"):
    token_mask_from_pixels(np.zeros((30, 32)), 16)


def test_second_pass_features_see_the_whole_image(randar_tiny):
  """A token's second-pass feature changes when a token *after* it changes; its first-pass feature doesn't."""
  model, config = randar_tiny
  tokens = _tokens(config, 1)
  changed = tokens.copy()
  changed[0, -1] = (changed[0, -1] + 1) % config.vocab_size  # the last token in raster order
  first = [bidirectional_features(model, t, first_pass=True, layers=-1) for t in (tokens, changed)]
  second = [bidirectional_features(model, t, layers=-1) for t in (tokens, changed)]
  assert second[0].shape == (1, config.grid_size, config.grid_size, config.dim)
  np.testing.assert_array_equal(first[0][0, 0, 0], first[1][0, 0, 0])
  assert float(jnp.abs(second[0][0, 0, 0] - second[1][0, 0, 0]).max()) > 1e-4
  stacked = bidirectional_features(model, tokens, layers=(0, 1))
  assert stacked.shape == (2, 1, config.grid_size, config.grid_size, config.dim)
  with pytest.raises(ValueError, match="layers must be in"):
    bidirectional_features(model, tokens, layers=config.n_layer)


# ---- image level (any tokenizer; here the grey-level tokenizer whose vocabulary matches the tiny model) ----


@pytest.fixture(scope="module")
def pixel_setup(randar_tiny):
  from randar_jax.tokenizers.pixels import PixelTokenizer

  model, config = randar_tiny
  tok = PixelTokenizer(levels=config.vocab_size)
  codes = np.random.default_rng(3).integers(0, config.vocab_size, (2, config.grid_size, config.grid_size))
  return model, config, tok, np.asarray(tok.decode(codes))


def test_pixel_tokenizer_round_trip():
  from randar_jax import tokenizers

  tok = tokenizers.load("pixels:17")
  codes = np.arange(17).reshape(1, 1, 17)
  np.testing.assert_array_equal(tok.encode(tok.decode(codes)), codes)
  assert tok.decode(codes).dtype == jnp.uint8 and tok.decode(codes).shape == (1, 1, 17, 1)


def test_inpaint_and_edit_keep_unmasked_pixels(pixel_setup):
  from randar_jax.zeroshot import editing

  model, config, tok, images = pixel_setup
  g = config.grid_size
  mask = np.zeros((g, g), bool)
  mask[1:3, 1:3] = True
  result = editing.inpaint(
    model, tok, images, mask, np.array([1, 2]), jax.random.key(0), num_steps=3, guidance=Guidance.linear(1.0, 3.0)
  )
  np.testing.assert_array_equal(result.images[:, ~mask], images[:, ~mask])
  np.testing.assert_array_equal(result.images[:, mask], result.generated[:, mask])
  edited = editing.edit(model, tok, images, mask * 255, np.array([7, 7]), jax.random.key(0), num_steps=3)
  np.testing.assert_array_equal(edited.images[:, ~mask], images[:, ~mask])
  assert edited.token_mask.shape == (2, g, g) and edited.token_mask[:, mask].all()


def test_outpaint_and_extend(pixel_setup):
  from randar_jax.zeroshot import editing

  model, config, tok, images = pixel_setup
  g = config.grid_size
  keep = np.zeros((g, g), bool)
  keep[:, : g // 2] = True
  out = editing.outpaint(model, tok, images, keep, np.array([3, 4]), jax.random.key(1), num_steps=4)
  np.testing.assert_array_equal(out.images[:, keep], images[:, keep])
  wide = editing.extend(model, tok, images, np.array([3, 4]), jax.random.key(2), right=2, num_steps=4)
  assert wide.images.shape == (2, g, g + 2, 1)
  np.testing.assert_array_equal(wide.images[:, :, :g], images)
  assert wide.token_mask[:, :, g:].all() and not wide.token_mask[:, :, :g].any()


def test_image_level_bad_input(pixel_setup):
  from randar_jax.zeroshot import editing

  model, config, tok, images = pixel_setup
  g, key, labels = config.grid_size, jax.random.key(0), np.array([1, 2])
  with pytest.raises(ValueError, match="the mask must be"):
    editing.inpaint(model, tok, images, np.ones((g + 1, g), bool), labels, key)
  with pytest.raises(ValueError, match="selects nothing"):
    editing.inpaint(model, tok, images, np.zeros((g, g), bool), labels, key)
  with pytest.raises(ValueError, match="keep mask is empty"):
    editing.outpaint(model, tok, images, np.zeros((g, g), bool), labels, key)
  with pytest.raises(ValueError, match="nothing to outpaint"):
    editing.outpaint(model, tok, images, np.ones((g, g), bool), labels, key)
  with pytest.raises(ValueError, match="pixels for this model"):
    editing.inpaint(model, tok, images[:, :-1], np.ones((g, g), bool), labels, key)
  with pytest.raises(ValueError, match="at least one side"):
    editing.extend(model, tok, images, labels, key)


def test_zero_shot_commands(fixtures, randar_tiny, tmp_path, capsys):
  """inpaint / edit / outpaint (box, extend) / extrapolate / features from image files to PNG panels."""
  from PIL import Image

  from randar_jax.cli import main
  from randar_jax.convert import convert_checkpoint

  _, config = randar_tiny
  ckpt = convert_checkpoint(fixture_file(fixtures, "randar_tiny.safetensors"), tmp_path / "m", config, progress=False)
  g = config.grid_size
  image = tmp_path / "img.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (g, g), dtype=np.uint8)).save(image)
  common = ["--model", ckpt, "--tokenizer", f"pixels:{config.vocab_size}", "--steps", "3"]
  out = tmp_path / "out"
  assert main(["inpaint", str(image), "--box", f"1,1,{g - 1},{g - 1}", "--class", "2", "--out", str(out)] + common) == 0
  assert main(["edit", str(image), "--box", f"0,0,{g // 2},{g}", "--class", "5", "--out", str(out)] + common) == 0
  assert (
    main(["outpaint", str(image), "--keep-box", f"0,0,{g},{g // 2}", "--class", "1", "--out", str(out)] + common) == 0
  )
  assert main(["outpaint", str(image), "--extend", "right=2", "--class", "1", "--out", str(out / "w")] + common) == 0
  assert Image.open(out / "w" / "img_outpaint_result.png").size == (g + 2, g)
  assert (
    main(
      ["features", str(image), "--out", str(out / "f"), "--model", ckpt, "--tokenizer", f"pixels:{config.vocab_size}"]
    )
    == 0
  )
  assert np.load(out / "f" / "features.npy").shape == (1, g, g, config.dim)
  assert main(["extrapolate", "--classes", "1", "--cfg", "3", "--out", str(out / "x")] + common) == 0
  assert Image.open(out / "x" / "00000.png").size == (2 * g, 2 * g)
  for name in ("img_inpaint.png", "img_edit.png", "img_outpaint.png"):
    assert (out / name).exists()
  assert main(["inpaint", str(image), "--box", "1,1", "--class", "2", "--out", str(out)] + common) == 2
  assert "malformed box" in capsys.readouterr().err
