#!/usr/bin/env bash
# One multi-GPU node (e.g. 8x H100): a single JAX process drives every local GPU; the mesh spans them all.
#
#   bash launch/gpu_node.sh runs/randar_l randar:variant=L,target=gpu,dtype=bfloat16 \
#       --config.data.source=codes/imagenet-llamagen-adm-256
#
# Install once: pip install -r requirements.txt -e . && pip install "jax[cuda12]==0.10.2"
# Re-running the same command resumes from the newest checkpoint in the workdir.
set -euo pipefail
WORKDIR=${1:?usage: gpu_node.sh WORKDIR [CONFIG] [--config.key=value ...]}
CONFIG=${2:-randar:variant=L,target=gpu,dtype=bfloat16}
shift $(( $# < 2 ? $# : 2 ))
cd "$(dirname "$0")/.."
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
exec randar-jax train --config "$CONFIG" --workdir "$WORKDIR" --distributed=off "$@"
