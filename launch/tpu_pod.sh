#!/usr/bin/env bash
# A Cloud TPU pod slice: the same command on every worker VM (jax.distributed.initialize() finds the slice by
# itself). The workdir must be the same shared directory on every worker (e.g. a Cloud Storage bucket mounted
# with gcsfuse, or Filestore), since every process writes its part of each checkpoint.
#
#   TPU=my-v4-64 ZONE=us-central2-b bash launch/tpu_pod.sh /mnt/runs/randar_l \
#       randar:variant=L,target=tpu,dtype=bfloat16
#
# One-time setup on all workers (the repository checked out at ~/randar_jax):
#   gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command \
#     'cd ~/randar_jax && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -e . "jax[tpu]==0.10.2"'
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}"
WORKDIR=${1:?usage: tpu_pod.sh WORKDIR [CONFIG] [--config.key=value ...]}
CONFIG=${2:-randar:variant=L,target=tpu,dtype=bfloat16}
shift $(( $# < 2 ? $# : 2 ))
EXTRA=""
if (( $# )); then EXTRA=$(printf ' %q' "$@"); fi
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd ~/randar_jax && .venv/bin/randar-jax train --config '$CONFIG' --workdir '$WORKDIR' \
   --distributed=on --no_progress $EXTRA 2>&1 | tee -a ~/train_\$(hostname).log"
