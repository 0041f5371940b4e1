#!/usr/bin/env bash
# Pretraining on several machines: Horovod over MPI, one rank per GPU.
#   launch/mpirun_multinode.sh NP HOSTS [tools/pretrain.py flags...]
#     NP     total ranks, e.g. 16 for two 8-GPU machines
#     HOSTS  "host1:8,host2:8", or a hostfile ("host1 slots=8" per line)
#   launch/mpirun_multinode.sh 16 host1:8,host2:8 --bert_config_file=bert_base \
#       --input_dir=/shared/records --output_dir=/shared/teacher --train_batch_size=4096
# Every host needs this checkout (and its .venv) at the same path and passwordless
# ssh. --output_dir should be on a filesystem all hosts share: rank 0 writes the
# checkpoints, and every rank writes its own input position (input_state/rank-*),
# which a resumed run reads back with the same NP and hosts.
# Env: MPIRUN_ARGS (extra mpirun options, e.g. "-x NCCL_SOCKET_IFNAME=eth0").
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 NP HOSTS|HOSTFILE [tools/pretrain.py flags...]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NP="$1"
HOSTS="$2"
shift 2
if [ -f "$HOSTS" ]; then
  HOST_ARGS=(-hostfile "$HOSTS")
else
  HOST_ARGS=(-H "$HOSTS")
fi
# shellcheck disable=SC2086  # MPIRUN_ARGS is a list of options.
exec mpirun -np "$NP" "${HOST_ARGS[@]}" -bind-to none -map-by slot \
  -x NCCL_DEBUG=INFO -x LD_LIBRARY_PATH -x PATH \
  -mca pml ob1 -mca btl ^openib ${MPIRUN_ARGS:-} \
  "$ROOT/.venv/bin/python" "$ROOT/tools/pretrain.py" "$@"
