#!/usr/bin/env bash
# Pretraining on one machine with 8 GPUs: one Horovod rank per GPU (rank i uses the
# GPU of its local rank), NCCL allreduce. Arguments are tools/pretrain.py flags;
# --train_batch_size stays the global batch, split over the 8 ranks.
#   launch/mpirun_1node_8gpu.sh --bert_config_file=bert_base --input_dir=out/records \
#       --output_dir=out/teacher --train_batch_size=256 --mixed_precision=fp16
# Env: NP (ranks, default 8), MPIRUN_ARGS (extra mpirun options, e.g.
# "--allow-run-as-root --oversubscribe" to try it on a CPU box as root).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NP="${NP:-8}"
# shellcheck disable=SC2086  # MPIRUN_ARGS is a list of options.
exec mpirun -np "$NP" -H "localhost:$NP" -bind-to none -map-by slot \
  -x NCCL_DEBUG=INFO -x LD_LIBRARY_PATH -x PATH \
  -mca pml ob1 -mca btl ^openib ${MPIRUN_ARGS:-} \
  "$ROOT/.venv/bin/python" "$ROOT/tools/pretrain.py" "$@"
