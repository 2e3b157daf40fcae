#!/usr/bin/env bash
# Train on every worker of a Cloud TPU VM pod slice (v4-32, v5p-64, v6e-32, ...).
#
# Usage (from the repository root, on a machine with gcloud):
#   TPU_NAME=my-pod ZONE=us-central2-b scripts/tpu_pod.sh [--dry-run] [--skip-setup] \
#     CONFIG WORKDIR [train.py flags ...]
#
# CONFIG is a path in the repository (the workers run from ~/$REMOTE_DIR), e.g.
#   TPU_NAME=my-pod ZONE=us-central2-b GCS_BUCKET=my-bucket scripts/tpu_pod.sh \
#     configs/paper/bert_base.py /gcs/my-bucket/bert_base --config.batch_size=256
#
# What it does, each step one gcloud command over --worker=all:
#   1. setup (skipped with --skip-setup): packs this checkout (tracked files and untracked
#      ones git does not ignore; no .venv, no .git), copies it to ~/$REMOTE_DIR on every
#      worker, and installs requirements.txt with the TPU build of JAX into a venv there;
#   2. launch: mounts GCS_BUCKET at $MOUNT_ROOT/$GCS_BUCKET (if set) and starts
#      `train.py --config CONFIG --workdir WORKDIR --distributed` on every worker at once.
#      --distributed calls jax.distributed.initialize() with no arguments: on a Cloud TPU
#      VM, JAX reads the workers, their addresses and this worker's index from the TPU
#      metadata. Every worker must run the same command; the run only starts when all
#      have joined.
#
# WORKDIR must be one directory that every worker sees at the same path: process 0 writes
# metrics.jsonl, the config and the tokenizer there, every process writes its own shards
# of each checkpoint there, and the others read the tokenizer process 0 trained. train.py
# writes WORKDIR through the local file system, so a gs:// path does NOT work (it would
# become a local folder named "gs:" on each worker): mount the bucket with gcsfuse
# (GCS_BUCKET below; a bucket with hierarchical namespace makes Orbax's rename of a
# finished checkpoint atomic, on a flat bucket gcsfuse needs --rename-dir-limit) or use a
# Filestore NFS share mounted on every worker. TFDS data: point --config.data.tfds_data_dir
# at gs://... (TFDS reads GCS itself) or at the mount.
#
# Multislice (several pod slices over the data-center network) is not supported: the mesh
# is built for one slice; see the README's "Launching many hosts" section.
#
# --dry-run prints every command instead of running it (no gcloud needed).
# Needs bash 4.4 or newer.
set -euo pipefail

TPU_NAME="${TPU_NAME:-plm-pod}"          # The TPU VM pod slice (gcloud compute tpus tpu-vm create).
ZONE="${ZONE:-us-central2-b}"            # Its zone.
PROJECT="${PROJECT:-}"                   # GCP project; empty: gcloud's configured project.
REMOTE_DIR="${REMOTE_DIR:-plm-flax}"     # The code's folder on every worker, under ~.
PYTHON="${PYTHON:-python3}"              # Python >= 3.11 on the workers (pyproject.toml);
                                         # Ubuntu 22.04 images have 3.10: install python3.11.
JAX_SPEC="${JAX_SPEC:-jax[tpu]==0.10.2}" # JAX's TPU build, the version requirements.txt pins.
GCS_BUCKET="${GCS_BUCKET:-}"             # A bucket to mount with gcsfuse on every worker; empty: none.
MOUNT_ROOT="${MOUNT_ROOT:-/gcs}"         # The bucket is mounted at $MOUNT_ROOT/$GCS_BUCKET.
DETACH="${DETACH:-0}"                    # 1: run under nohup, logs in ~/$REMOTE_DIR/train-<hostname>.log.
TARBALL="${TARBALL:-/tmp/plm-flax-code.tar.gz}" # The local archive of the checkout.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
SETUP=1

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit "${1:-0}"
}

# Prints a command as one shell-quoted line.
show() {
  local out=() arg
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./=:,@+%-]+$ ]]; then out+=("$arg"); else out+=("${arg@Q}"); fi
  done
  echo "+ ${out[*]}"
}

# Runs a command, or only prints it with --dry-run.
run() {
  show "$@"
  if [[ $DRY_RUN == 0 ]]; then "$@"; fi
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --skip-setup) SETUP=0; shift ;;
    -h | --help) usage 0 ;;
    *) break ;;
  esac
done
if [[ $# -lt 2 ]]; then
  echo "error: CONFIG and WORKDIR are required." >&2
  usage 2 >&2
fi
CONFIG="$1"
WORKDIR="$2"
shift 2
if [[ $WORKDIR == gs://* ]]; then
  bucket="${WORKDIR#gs://}"
  echo "error: WORKDIR=$WORKDIR: train.py writes its workdir through the local file" \
    "system, so mount the bucket on every worker (GCS_BUCKET=${bucket%%/*}" \
    "WORKDIR=$MOUNT_ROOT/$bucket) or use an NFS share." >&2
  exit 2
fi

gcloud_all=(--zone="$ZONE" --worker=all)
if [[ -n $PROJECT ]]; then gcloud_all+=(--project="$PROJECT"); fi

if [[ $SETUP == 1 ]]; then
  # The files git tracks plus the untracked ones it does not ignore: the code as it is here.
  run bash -c "cd ${ROOT@Q} && git ls-files -z --cached --others --exclude-standard \
| tar --null -T - -czf ${TARBALL@Q}"
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU_NAME:plm-flax-code.tar.gz" "${gcloud_all[@]}"
  setup="set -e; mkdir -p ~/$REMOTE_DIR && tar -xzf ~/plm-flax-code.tar.gz -C ~/$REMOTE_DIR"
  setup+=" && cd ~/$REMOTE_DIR && $PYTHON -m venv .venv && . .venv/bin/activate"
  setup+=" && pip install --quiet --upgrade pip"
  setup+=" && pip install --quiet -r requirements.txt $(printf '%q' "$JAX_SPEC")"
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gcloud_all[@]}" --command="$setup"
fi

train=(python train.py --config="$CONFIG" --workdir="$WORKDIR" --distributed "$@")
launch="set -e; "
if [[ -n $GCS_BUCKET ]]; then
  mount="$MOUNT_ROOT/$GCS_BUCKET"
  launch+="sudo mkdir -p $mount && sudo chown \"\$USER\" $mount"
  launch+=" && { mountpoint -q $mount || gcsfuse --implicit-dirs --rename-dir-limit=1000000"
  launch+=" $GCS_BUCKET $mount; }; "
fi
launch+="cd ~/$REMOTE_DIR && . .venv/bin/activate && "
if [[ $DETACH == 1 ]]; then
  launch+="nohup $(printf '%q ' "${train[@]}")< /dev/null > train-\$(hostname).log 2>&1 &"
else
  launch+="$(printf '%q ' "${train[@]}")"
fi
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gcloud_all[@]}" --command="$launch"
