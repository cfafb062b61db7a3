"""``randar-jax app``: an editing page in the browser (Gradio; ``pip install .[app]``).

    randar-jax app                                               # the digits demo's run (trained first if missing)
    randar-jax app --model ckpt/randar_l --tokenizer ckpt/vq     # any RandAR checkpoint (sampling: any generator)
    randar-jax app --share                                       # a public link (Colab)

The back end (:mod:`.studio`) needs no browser; the page (:mod:`.page`) imports Gradio only when served.
"""

from __future__ import annotations

import argparse
import os

from randar_jax.app.studio import Studio


def load_studio(model: str | None, tokenizer: str | None, digits_out: str = "runs/digits") -> Studio:
  """A Studio for a generator checkpoint directory and its tokenizer; with no ``model``, the digits demo's run in
  ``digits_out/train`` (trained there first if it is not finished: a few minutes on a CPU, reused afterwards).
  Everything that can be checked is checked before weights are loaded."""
  from randar_jax import checkpoint, families, tokenizers

  if model is None:
    from randar_jax import demo
    from randar_jax.data import digits

    model = os.path.join(digits_out, "train")
    print(f"no --model: the digits demo's run in {model} (trained first if it is not finished there: minutes on a CPU)")
    demo.train_or_reuse(demo.digits_config(), model)
    tokenizer = tokenizer or f"pixels:{digits.LEVELS}"
  if tokenizer is None:
    raise ValueError("--model needs its --tokenizer (a converted tokenizer directory, or pixels:N for grey levels)")
  config = families.config_from_dict(checkpoint.read_config(model))
  if families.of(config).kind != "generator":
    raise ValueError(f"{model} holds a {config.FAMILY!r} checkpoint, not an image generator")
  tok = tokenizers.load(tokenizer)
  if tok.vocab_size != config.vocab_size:
    raise ValueError(f"the tokenizer has {tok.vocab_size} codes but the model {config.vocab_size}")
  return Studio(checkpoint.load_model(model), tok)


def register(commands: argparse._SubParsersAction) -> None:
  p = commands.add_parser("app", help="the editing page in a browser: sample, inpaint, outpaint, extend (Gradio)")
  p.add_argument("--model", help="generator checkpoint directory (default: the digits demo's run, trained if missing)")
  p.add_argument("--tokenizer", help="tokenizer directory or pixels:N (needed with --model)")
  p.add_argument("--digits-out", default="runs/digits", help="the digits demo's folder (without --model)")
  p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: the whole network)")
  p.add_argument("--port", type=int, default=7860)
  p.add_argument("--share", action="store_true", help="also open a public Gradio link (Colab)")
  p.set_defaults(run=_command)


def _command(args: argparse.Namespace) -> None:
  if not 0 < args.port < 65536:
    raise ValueError(f"--port must be in [1, 65535], got {args.port}")
  try:
    from randar_jax.app import page
  except ImportError as e:
    raise ValueError(f"the app needs Gradio: pip install 'randar_jax[app]' ({e})") from None
  page.launch(
    load_studio(args.model, args.tokenizer, args.digits_out), host=args.host, port=args.port, share=args.share
  )
