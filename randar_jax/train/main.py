"""Train a generator (RandAR, RAR, ...) from a recipe (``randar_jax/configs/``) or a config file; a workdir that
holds checkpoints resumes. ``randar-jax train ...`` and ``python -m randar_jax.train ...`` are the same command.

  randar-jax train --config randar:runlocal --workdir /tmp/randar_local
  randar-jax train --config randar:variant=L,target=gpu,dtype=bfloat16 --workdir runs/randar_l \
      --config.data.source=codes/imagenet-llamagen-adm-256 --config.batch_size=1024

Multi-process: ``--distributed=auto`` (default) calls ``jax.distributed.initialize()`` when a cluster is evident
(SLURM with several tasks, a multi-host Cloud TPU slice, Open MPI); ``--coordinator=HOST:PORT --num_processes=N
--process_id=I`` sets it up explicitly (e.g. one process per GPU node without SLURM). Every process runs this
same command with the same --workdir (a shared file system or a gs:// bucket); launchers in launch/*.sh.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from randar_jax import config_io
from randar_jax.utils import profiling

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "recipe or config file[:args], e.g. randar:variant=L or my_config.py", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, logs, samples (resumes if present)")
_DISTRIBUTED = flags.DEFINE_enum(
  "distributed",
  "auto",
  ["auto", "on", "off"],
  "jax.distributed.initialize: auto = when a cluster environment is detected",
)
_COORDINATOR = flags.DEFINE_string("coordinator", None, "HOST:PORT of process 0 (explicit multi-process setup)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes (with --coordinator)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index (with --coordinator)")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", None, "number of (fake) CPU devices per process, for testing")
_STOP_AT = flags.DEFINE_integer(
  "stop_at",
  None,
  "stop (with a checkpoint) after this step; the schedule still spans config.total_steps and a later run resumes",
)
_PREEMPT_AT = flags.DEFINE_integer(
  "preempt_at", None, "preemption drill: SIGKILL this process after that step (once pending checkpoints are written)"
)
_PREEMPT_MID_SAVE = flags.DEFINE_bool(
  "preempt_mid_save", False, "with --preempt_at at a checkpoint step: SIGKILL while that checkpoint is being written"
)
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "no progress bar (logs only)")
_PROFILE_STEPS = flags.DEFINE_string(
  "profile_steps", None, "FIRST,LAST: jax.profiler trace of those steps into WORKDIR/profile (TensorBoard profile tab)"
)
flags.mark_flags_as_required(["config", "workdir"])


def cluster_detected() -> bool:
  """True under SLURM with several tasks, on a multi-host TPU slice, or under Open MPI with several ranks."""
  env = os.environ
  if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1"))) > 1:
    return True
  if "," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  return int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def initialize_distributed(jax) -> None:
  explicit = _COORDINATOR.value is not None
  if explicit and (_NUM_PROCESSES.value is None or _PROCESS_ID.value is None):
    raise app.UsageError("--coordinator needs --num_processes and --process_id")
  if _DISTRIBUTED.value == "off" or not (explicit or _DISTRIBUTED.value == "on" or cluster_detected()):
    return
  if explicit:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, initialization_timeout=300)
  else:
    jax.distributed.initialize()  # TPU / SLURM / MPI auto-detection of coordinator, count and rank


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:  # bad flag values: one line before any work
    profile_steps = profiling.parse_steps(_PROFILE_STEPS.value)
    if profile_steps and profile_steps[1] > _CONFIG.value.total_steps:
      raise ValueError(f"--profile_steps {_PROFILE_STEPS.value} ends after total_steps {_CONFIG.value.total_steps}")
  except ValueError as e:
    fail(str(e))
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file operation at INFO
  import jax

  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  if jax.config.jax_platforms == "cpu" or _CPU_DEVICES.value:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU multi-process collectives
  initialize_distributed(jax)

  from randar_jax.train.checkpointing import CheckpointError, NonFiniteError
  from randar_jax.train.loop import train
  from randar_jax.train.preflight import SetupError

  try:
    train(
      _CONFIG.value,
      _WORKDIR.value,
      stop_at=_STOP_AT.value,
      preempt_at=_PREEMPT_AT.value,
      preempt_mid_save=_PREEMPT_MID_SAVE.value,
      progress=not _NO_PROGRESS.value,
      profile_steps=profile_steps,
    )
  except (SetupError, CheckpointError, NonFiniteError) as e:  # the user's to fix: one line; bugs keep a traceback
    fail(str(e))


def fail(message: str) -> None:
  print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with its errors (unknown or mistyped --config.x overrides, missing flags) as one line,
  naming the nearest config fields."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as e:  # ml_collections: AttributeError for an unknown field
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    unknown = [a.split("=", 1)[0][len("--config.") :] for a in argv if a.startswith("--config.")]
    config = flags.FLAGS["config"].value if flags.FLAGS["config"].present else None
    if config is None:  # parsing stopped at an override: load the file alone to name the fields it has
      config = _config_alone(argv)
    if config is not None:
      from randar_jax.train.preflight import flat_keys, suggest

      known = flat_keys(config)
      bad = [k for k in unknown if k not in known]
      if bad:
        message = f"--config.{bad[0]}: no such config field{suggest(bad[0], known)}"
    fail(message)


def _config_alone(argv: list[str]):
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return None
  try:
    from randar_jax.config_io import load_config

    return load_config(spec)
  except Exception:  # noqa: BLE001 - the original parse error is reported instead
    return None


PROG = "randar-jax train"


def resolve_config_flag(argv: list[str]) -> list[str]:
  """``--config NAME[:args]`` / ``--config=NAME[:args]`` with a packaged recipe's name -> its file's path (the
  ml_collections flag loads files only); a config that does not exist is one clear line (exit code 2)."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg in ("--config", "-config") and i + 1 < len(argv):
      i, prefix = i + 1, ""
    elif arg.startswith(("--config=", "-config=")):
      prefix = arg.partition("=")[0] + "="
    else:
      continue
    try:
      argv[i] = prefix + config_io.config_path(argv[i][len(prefix) :])
    except FileNotFoundError as e:
      fail(str(e))
  return argv


def run(argv: list[str] | None = None) -> None:
  """Parses ``argv`` (default: sys.argv; argv[0] is the program name) and trains. ml_collections reads config
  overrides (``--config.x=1``) from sys.argv, hence it is set here."""
  sys.argv = resolve_config_flag(sys.argv if argv is None else argv)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
