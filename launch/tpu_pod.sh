#!/usr/bin/env bash
# Runs the same training command on every worker of a TPU VM pod slice; JAX finds the
# coordinator from the TPU metadata (--distributed=auto).
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a bash launch/tpu_pod.sh \
#       --config=configs/lm_lora.py --workdir=gs://bucket/runs/lm --config.mesh.fsdp=8
#
# Assumes the repo is checked out at the same path on every worker and scripts/setup.sh
# has been run there (e.g. once with the same gcloud command).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_DIR=${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command \
  "cd $REPO_DIR && .venv/bin/python -m launch.train --distributed=auto$args"
