"""The editing page (``randar-jax app``) driven in a real headless Chromium: sample a digit, brush a mask, inpaint,
and check the picture the page shows; a bad setting shows the CLI's message on the page; repeated requests with
the same settings compile nothing. A tiny untrained digits-shaped RandAR stands in for the trained demo run (the
page's code path is the same; training would take minutes).

The browser tests need the app extra (gradio), selenium and Debian's chromium + chromium-driver, and skip with the
reason otherwise; the back-end tests (outpainting, canvas extension, features, bad input) need none of them.
"""

import io
import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from randar_jax import families, sharding
from randar_jax.app.studio import FRAME_COLUMNS, HIDDEN, Studio
from randar_jax.decode.plan import query_counts
from randar_jax.demo import digits_config
from randar_jax.tokenizers.pixels import PixelTokenizer
from randar_jax.utils import images as images_lib
from randar_jax.utils.compiles import compile_events

try:
  from selenium import webdriver
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the browser tests skip, saying why
  webdriver = None

STEPS = 8  # forwards per decode: small, for speed
WAIT = 90  # seconds for a request (the first one compiles)
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


class CountingStudio(Studio):
  """Counts finished requests, so the test knows when the server is done with one (compiles included)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.done = {"sample": 0, "edit": 0}
    self.lock = threading.Lock()

  def _count(self, name, result):
    with self.lock:
      self.done[name] += 1
    return result

  def sample(self, *args, **kwargs):
    return self._count("sample", super().sample(*args, **kwargs))

  def edit(self, *args, **kwargs):
    return self._count("edit", super().edit(*args, **kwargs))


@pytest.fixture(scope="module")
def studio():
  config = families.config_from_dict(digits_config().model.to_dict())
  with sharding.model_context():
    model = families.build(config, 0)
  return CountingStudio(model, PixelTokenizer(config.vocab_size))


@pytest.fixture(scope="module")
def browser(studio):
  pytest.importorskip("gradio", reason="the app extra is not installed: pip install '.[app]'")
  if webdriver is None:
    pytest.skip("selenium is not installed: pip install -r requirements-app.txt")
  if not (CHROMIUM and DRIVER):
    pytest.skip("no headless browser: apt-get install chromium chromium-driver (Debian) to run the page tests")
  from randar_jax.app import page as page_lib

  page = page_lib.queued(studio)
  _, url, _ = page.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
  options = webdriver.ChromeOptions()
  for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
    options.add_argument(flag)
  options.binary_location = CHROMIUM
  driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
  driver.get(url)
  WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.ID, "sample"))
  yield driver
  driver.quit()
  page.close()


def _type(driver, elem_id: str, value) -> None:
  field = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
  field.send_keys(Keys.CONTROL, "a")
  field.send_keys(str(value), Keys.TAB)


def _pick_class(driver, name: str) -> None:
  field = driver.find_element(By.CSS_SELECTOR, "#class input")
  field.click()
  field.send_keys(Keys.CONTROL, "a")
  field.send_keys(name, Keys.ENTER)
  WebDriverWait(driver, 10).until(
    lambda d: d.find_element(By.CSS_SELECTOR, "#class input").get_attribute("value") == name
  )


def _picture(src: str) -> np.ndarray:
  with urllib.request.urlopen(src) as response:
    return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def _srcs(driver, selector: str) -> list[str]:
  return [img.get_attribute("src") for img in driver.find_elements(By.CSS_SELECTOR, selector)]


def _click_and_wait(driver, studio, button: str, name: str, selector: str, count: int = 1) -> list[str]:
  """Clicks ``button``, waits until the server finished the request and the page shows new pictures."""
  before, done = _srcs(driver, selector), studio.done[name]
  driver.find_element(By.ID, button).click()
  WebDriverWait(driver, WAIT).until(lambda d: studio.done[name] > done)
  WebDriverWait(driver, WAIT).until(lambda d: len(_srcs(d, selector)) >= count and _srcs(d, selector) != before)
  return _srcs(driver, selector)


def test_sample_brush_inpaint_in_the_browser(browser, studio):
  grid = studio.model.config.grid_size
  _pick_class(browser, studio.names[3])
  _type(browser, "steps", STEPS)
  _type(browser, "count", 2)
  shown = _click_and_wait(browser, studio, "sample", "sample", "#gallery img", count=2)
  assert len(shown) == 2
  sample = _picture(shown[0])
  assert sample.shape == (studio.size * studio.scale,) * 2 + (3,)

  browser.find_element(By.ID, "send").click()
  canvas = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#editor canvas"))
  WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "editor").is_displayed())
  time.sleep(1)  # the editor draws the picture
  # A stroke across the lower part of the picture (the picture sits at the canvas centre).
  shown_side = min(canvas.size["width"], canvas.size["height"]) * 0.8
  y = int(shown_side * 0.3)
  ActionChains(browser).move_to_element_with_offset(canvas, -int(shown_side * 0.3), y).click_and_hold().pause(
    0.2
  ).move_by_offset(int(shown_side * 0.3), 0).pause(0.2).move_by_offset(int(shown_side * 0.3), 0).release().perform()
  (result_src,) = _click_and_wait(browser, studio, "edit_button", "edit", "#result img")
  result = _picture(result_src)
  assert result.shape == sample.shape
  cells = result.reshape(grid, studio.scale, grid, studio.scale, 3)[:, 0, :, 0, 0]
  known = sample.reshape(grid, studio.scale, grid, studio.scale, 3)[:, 0, :, 0, 0]
  # Every pixel is a whole model pixel, the unbrushed upper half is kept exactly, the brushed band was redrawn.
  np.testing.assert_array_equal(result[..., 0], cells.repeat(studio.scale, axis=0).repeat(studio.scale, axis=1))
  np.testing.assert_array_equal(cells[: grid // 2], known[: grid // 2])
  assert (cells[grid // 2 :] != known[grid // 2 :]).any()

  # The same request again (another seed, same settings): the compiled programs are reused.
  _type(browser, "seed", 1)
  with compile_events() as compiles:
    _click_and_wait(browser, studio, "edit_button", "edit", "#result img")
  assert compiles.count == 0


def test_same_settings_sample_again_without_compiling(browser, studio):
  browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Sample')]").click()
  _type(browser, "steps", STEPS)
  _type(browser, "count", 2)
  _type(browser, "seed", 2)
  _click_and_wait(browser, studio, "sample", "sample", "#gallery img", count=2)  # compiles if not done before
  _type(browser, "seed", 3)
  with compile_events() as compiles:
    _click_and_wait(browser, studio, "sample", "sample", "#gallery img", count=2)
  assert compiles.count == 0


def test_invalid_setting_shows_the_cli_message_and_the_page_keeps_working(browser, studio):
  bad = studio.model.config.num_tokens + 1
  with pytest.raises(ValueError) as expected:  # the CLI's check, whose message the page must show
    studio.settings(steps=bad, cfg=None, temperature=None, top_k=None, top_p=None)
  _type(browser, "steps", bad)
  done = studio.done["sample"]
  browser.find_element(By.ID, "sample").click()
  WebDriverWait(browser, WAIT).until(lambda d: str(expected.value) in d.find_element(By.TAG_NAME, "body").text)
  assert studio.done["sample"] == done
  _type(browser, "steps", STEPS)
  _type(browser, "seed", 4)
  assert len(_click_and_wait(browser, studio, "sample", "sample", "#gallery img", count=2)) == 2


def test_outpaint_extend_and_features_keep_what_they_must(studio):
  settings = studio.settings(steps=STEPS, cfg=None, temperature=None, top_k=None, top_p=None)
  size, scale, grid = studio.size, studio.scale, studio.model.config.grid_size
  rng = np.random.default_rng(0)
  levels = rng.integers(0, studio.tokenizer.levels, (1, grid, grid))
  picture = studio.show(np.asarray(studio.tokenizer.decode(levels)))[0]  # as the page shows it
  image, _ = studio.to_model(picture)
  np.testing.assert_array_equal(image, np.asarray(studio.tokenizer.decode(levels))[0])  # exact round trip
  keep = np.zeros(picture.shape[:2], bool)
  keep[:, : picture.shape[1] // 2] = True  # brushed: the left half, to keep
  result = studio.edit(picture, keep, "outpaint", 1, 0, settings)
  np.testing.assert_array_equal(result[:, : picture.shape[1] // 2], picture[:, : picture.shape[1] // 2])
  wider = studio.extend(picture, {"right": 2}, 1, 0, settings)
  assert wider.shape == (size * scale, (size + 2 * studio.tokenizer.downsample) * scale, 3)
  np.testing.assert_array_equal(wider[:, : picture.shape[1]], picture)
  pca = studio.features(picture, None)
  assert pca.shape == picture.shape and pca.dtype == np.uint8


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda s, p, st: s.edit(p, np.zeros(p.shape[:2], bool), "inpaint", 0, 0, st), "selects nothing"),
    (lambda s, p, st: s.edit(p, np.ones(p.shape[:2], bool), "outpaint", 0, 0, st), "nothing to outpaint"),
    (lambda s, p, st: s.edit(p, np.ones(p.shape[:2], bool), "erase", 0, 0, st), "mode must be one of"),
    (lambda s, p, st: s.extend(p, {"left": -1}, 0, 0, st), "non-negative"),
    (lambda s, p, st: s.sample(0, 0, 0, st), "number of images"),
    (lambda s, p, st: s.label("11"), "class ids must be in"),
  ],
)
def test_bad_requests_are_refused_before_compiling(studio, call, message):
  settings = studio.settings(steps=STEPS, cfg=None, temperature=None, top_k=None, top_p=None)
  picture = np.zeros((studio.size * studio.scale,) * 2 + (3,), np.uint8)
  with compile_events() as compiles, pytest.raises(ValueError, match=message):
    call(studio, picture, settings)
  assert compiles.count == 0


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--port", "0"], "--port must be in [1, 65535], got 0"),
    (["--model", "{tmp}"], "--model needs its --tokenizer"),
    (["--model", "{tmp}/missing", "--tokenizer", "pixels:17"], "no checkpoint directory at {tmp}/missing"),
  ],
)
def test_app_command_refuses_bad_flags_in_one_line(tmp_path, capsys, argv, message):
  pytest.importorskip("gradio", reason="the app extra is not installed: pip install '.[app]'")
  from randar_jax import cli

  assert cli.main(["app", *(a.format(tmp=tmp_path) for a in argv)]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"randar-jax app: error: {message.format(tmp=tmp_path)}") and err.count("\n") == 1


def test_decoding_order_frames_reveal_the_schedule(studio):
  settings = studio.settings(steps=STEPS, cfg=None, temperature=None, top_k=None, top_p=None)
  shown = studio.sample(label=2, count=2, seed=0, settings=settings)
  counts = query_counts(studio.model.config.num_tokens, STEPS)
  assert shown.num_frames == len(counts) == STEPS
  pictures = np.stack(shown.images)
  for k in range(STEPS):
    revealed = shown.rank < sum(counts[: k + 1])  # (B, h, w): the cells decoded by forward k
    assert (revealed.sum(axis=(1, 2)) == sum(counts[: k + 1])).all()
    block = np.ones((shown.cell, shown.cell), bool)
    mask = np.stack([np.kron(r, block) for r in revealed])[..., None]
    expected = images_lib.grid(np.where(mask, pictures, HIDDEN), columns=min(len(pictures), FRAME_COLUMNS), fill=255)
    np.testing.assert_array_equal(shown.frame(k), expected)
  assert (shown.frame(STEPS - 1) != HIDDEN).any() and (shown.frame(0) == HIDDEN).sum() > (
    shown.frame(1) == HIDDEN
  ).sum()


def test_load_studio_from_a_checkpoint_directory(tmp_path, studio):
  from randar_jax import checkpoint
  from randar_jax.app import load_studio

  cfg = studio.model.config
  directory = checkpoint.save_params(tmp_path / "digits", checkpoint.model_params(studio.model), cfg.to_dict())
  loaded = load_studio(directory, f"pixels:{cfg.vocab_size}")
  assert loaded.model.config == cfg and loaded.names == [f"digit {i}" for i in range(cfg.num_classes)]
  other = cfg.vocab_size - 1
  with pytest.raises(ValueError, match=f"the tokenizer has {other} codes but the model {cfg.vocab_size}"):
    load_studio(directory, f"pixels:{other}")


def test_every_model_request_shares_one_queue_of_one(studio):
  pytest.importorskip("gradio", reason="the app extra is not installed: pip install '.[app]'")
  from randar_jax.app import page as page_lib

  page = page_lib.queued(studio)
  queued = [fn for fn in page.fns.values() if fn.queue]
  names = {fn.name for fn in queued}
  assert {"sample", "edit", "extend", "features"} <= names
  assert {(fn.concurrency_id, fn.concurrency_limit) for fn in queued} == {("device", 1)}
