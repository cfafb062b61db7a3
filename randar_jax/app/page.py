"""The Gradio page over a :class:`randar_jax.app.studio.Studio`: settings on the left; tabs to sample (with the
decoding order as a step slider), to edit with a brush (inpaint, class-conditional edit, outpaint), to extend the
canvas and to show the bidirectional features.

    page = queued(studio)           # build(studio) with its queue: one request on the device at a time
    page.launch()

Bad settings raise ``gr.Error`` with the CLI's message (shown on the page, which keeps working); bugs keep their
traceback in the server log.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline by default: no usage reports

import gradio as gr  # noqa: E402 (after the analytics switch)
import numpy as np  # noqa: E402

from randar_jax.app.studio import MAX_IMAGES, Studio  # noqa: E402

SCHEDULES = ("none", "constant", "linear", "powcos")  # guidance schedules (Guidance.parse specs)
SIDES = ("top", "bottom", "left", "right")


def guidance_spec(schedule: str, scale: float | None, power: float | None) -> str:
  """The page's guidance controls as a ``Guidance.parse`` spec (linear: RandAR's 1 -> scale)."""
  if schedule not in SCHEDULES:
    raise ValueError(f"guidance schedule must be one of {SCHEDULES}, got {schedule!r}")
  if schedule == "none":
    return "none"
  if scale is None or (schedule == "powcos" and power is None):
    raise ValueError("give a guidance scale (and a power for powcos)")
  return {"constant": f"{scale}", "linear": f"1,{scale}", "powcos": f"powcos:{scale},{power}"}[schedule]


def _whole(value, name: str) -> int:
  """A whole number from a page field (an empty field is a user error, not a crash)."""
  if value is None or float(value) != int(value):
    raise ValueError(f"{name} must be a whole number, got {value!r}")
  return int(value)


def _user_errors(fn):
  """Bad input becomes a message on the page (gr.Error); anything else is a bug and keeps its traceback."""

  @functools.wraps(fn)
  def run(*args):
    try:
      return fn(*args)
    except (ValueError, FileNotFoundError) as e:
      raise gr.Error(str(e), print_exception=False) from None

  return run


def _brushed(value) -> tuple[np.ndarray, np.ndarray]:
  """An ImageEditor value -> (picture (H, W, 3), brushed (H, W) bool: any painted layer pixel)."""
  if not value or value.get("background") is None:
    raise ValueError("no picture to edit: sample one and press 'edit this sample', or upload one")
  picture = np.asarray(value["background"])
  brushed = np.zeros(picture.shape[:2], bool)
  for layer in value.get("layers") or []:
    layer = np.asarray(layer)
    if layer.ndim == 3 and layer.shape[:2] == brushed.shape:
      brushed |= layer[..., -1] > 0 if layer.shape[-1] == 4 else layer.any(axis=-1)
  return picture[..., :3], brushed


def build(studio: Studio, title: str = "randar-jax") -> gr.Blocks:
  """The page for ``studio`` (not launched)."""
  defaults = studio.default_settings()
  guidance = defaults.guidance
  schedule = "none" if guidance is None else guidance.schedule_name.split(":")[0]
  cfg = studio.model.config

  def settings(steps, schedule, scale, power, temperature, top_k, top_p):
    return studio.settings(
      steps=None if steps is None else _whole(steps, "steps"),
      cfg=guidance_spec(schedule, scale, power),
      temperature=temperature,
      top_k=None if top_k is None else _whole(top_k, "top-k"),
      top_p=top_p,
    )

  @_user_errors
  def sample(label, count, seed, *knobs):
    shown = studio.sample(
      studio.label(label), _whole(count, "number of images"), _whole(seed, "seed"), settings(*knobs)
    )
    last = shown.num_frames - 1
    return shown.images, shown, gr.Slider(minimum=0, maximum=last, value=last, step=1), shown.frame(last)

  def frame(shown, index):
    return None if shown is None else shown.frame(index)

  def pick(event: gr.SelectData):
    return event.index

  def to_editor(images, selected):
    if not images:
      raise gr.Error("sample first: there is no image to edit yet")
    item = images[min(int(selected or 0), len(images) - 1)]
    return gr.ImageEditor(value=item[0] if isinstance(item, tuple | list) else item), gr.Tabs(selected="edit")

  @_user_errors
  def edit(value, mode, label, seed, *knobs):
    picture, brushed = _brushed(value)
    return studio.edit(picture, brushed, mode, studio.label(label), _whole(seed, "seed"), settings(*knobs))

  @_user_errors
  def extend(value, label, seed, top, bottom, left, right, *knobs):
    picture, _ = _brushed(value)
    sides = {side: _whole(v or 0, f"extend {side}") for side, v in zip(SIDES, (top, bottom, left, right), strict=True)}
    return studio.extend(picture, sides, studio.label(label), _whole(seed, "seed"), settings(*knobs))

  @_user_errors
  def features(value, layer):
    picture, _ = _brushed(value)
    layer = _whole(layer, "block")
    return studio.features(picture, None if layer < 0 else layer)

  with gr.Blocks(title=title) as page:
    gr.Markdown(
      f"## {title}: {studio.family.name} ({cfg.grid_size}x{cfg.grid_size} tokens, {cfg.num_classes} classes, "
      f"{studio.size} px images)\nSample a class and watch the decoding order; brush over a sample or an "
      "upload to inpaint, edit or outpaint it; extend its canvas; see its bidirectional features."
    )
    with gr.Row():
      with gr.Column(scale=1, min_width=260):
        label = gr.Dropdown(studio.names, value=studio.names[0], label="class", elem_id="class")
        steps = gr.Number(
          defaults.num_steps, precision=0, label="steps (forwards; -1: one token each)", elem_id="steps"
        )
        schedule = gr.Radio(list(SCHEDULES), value=schedule, label="guidance schedule", elem_id="schedule")
        scale = gr.Number(1.0 if guidance is None else guidance.end, label="guidance scale", elem_id="scale")
        power = gr.Number(1.0 if guidance is None else guidance.power, label="power (powcos)", elem_id="power")
        temperature = gr.Number(defaults.sampling.temperature, label="temperature", elem_id="temperature")
        top_k = gr.Number(defaults.sampling.top_k, precision=0, label="top-k (0: off)", elem_id="top_k")
        top_p = gr.Number(defaults.sampling.top_p, label="top-p (1: off)", elem_id="top_p")
        seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
        knobs = [steps, schedule, scale, power, temperature, top_k, top_p]
      with gr.Column(scale=3), gr.Tabs(elem_id="tabs") as tabs:
        with gr.Tab("Sample", id="sample"):
          count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="number of images", elem_id="count")
          sample_button = gr.Button("Sample", variant="primary", elem_id="sample")
          gallery = gr.Gallery(label="samples", columns=4, format="png", elem_id="gallery", interactive=False)
          order_step = gr.Slider(0, 1, value=1, step=1, label="decoding order: canvas after forward", elem_id="step")
          order_image = gr.Image(label="decoding order", format="png", interactive=False, height=300, elem_id="order")
          selected = gr.Number(0, precision=0, label="sample to edit (0 = first)", elem_id="selected")
          send = gr.Button("Edit this sample", elem_id="send")
        with gr.Tab("Edit", id="edit"):
          editor = gr.ImageEditor(
            type="numpy",
            image_mode="RGBA",
            format="png",
            sources=("upload", "clipboard"),
            transforms=(),
            layers=False,
            brush=gr.Brush(colors=["#ff2020"], color_mode="fixed", default_size=max(8, studio.scale * 3 // 4)),
            label="picture: brush the region",
            elem_id="editor",
          )
          mode = gr.Radio(
            [("inpaint / edit: redraw the brushed region as the class", "inpaint"), ("outpaint: keep it", "outpaint")],
            value="inpaint",
            label="brush means",
            elem_id="mode",
          )
          edit_button = gr.Button("Regenerate", variant="primary", elem_id="edit_button")
          with gr.Row():
            sides = [
              gr.Number(0, precision=0, label=f"extend {side} (tokens)", elem_id=f"extend_{side}") for side in SIDES
            ]
          extend_button = gr.Button("Extend the canvas", elem_id="extend_button")
          result = gr.Image(label="result", format="png", interactive=False, elem_id="result")
        with gr.Tab("Features", id="features"):
          layer = gr.Number(-1, precision=0, label="block (-1: the middle one)", elem_id="layer")
          features_button = gr.Button("Bidirectional features (PCA colours)", elem_id="features_button")
          pca = gr.Image(label="features", format="png", interactive=False, elem_id="pca")
    shown = gr.State(None)  # the last Samples, for the decoding-order slider

    device = dict(concurrency_id="device", concurrency_limit=1)  # one queue for every event that runs the model
    sample_button.click(sample, [label, count, seed, *knobs], [gallery, shown, order_step, order_image], **device)
    order_step.change(frame, [shown, order_step], order_image, queue=False)
    gallery.select(pick, None, selected, queue=False)
    send.click(to_editor, [gallery, selected], [editor, tabs], queue=False)
    edit_button.click(edit, [editor, mode, label, seed, *knobs], result, **device)
    extend_button.click(extend, [editor, label, seed, *sides, *knobs], result, **device)
    features_button.click(features, [editor, layer], pca, **device)
  return page


def queued(studio: Studio) -> gr.Blocks:
  """The page with its request queue: one request on the device at a time (every model event shares the
  'device' queue), the others wait their turn."""
  return build(studio).queue(default_concurrency_limit=1)


def launch(studio: Studio, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False, **kwargs) -> None:
  """Serves the page (blocks until interrupted)."""
  queued(studio).launch(server_name=host, server_port=port, share=share, **kwargs)
