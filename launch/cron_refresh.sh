#!/usr/bin/env bash
# Cron entry point for corpus refreshes (see README, "Refreshing from new dumps").
#   launch/cron_refresh.sh ROOT MIRROR_URL VOCAB_FILE [refresh_corpus.py flags...]
# e.g. with teacher labels built (incrementally) for every version:
#   launch/cron_refresh.sh /data/corpus https://MIRROR/ /data/vocab.txt --wiki=enwiki \
#     --teacher_config=/data/teacher/bert_config.json \
#     --teacher_checkpoint=/data/teacher/bert_model.ckpt --truncation_factor=32
# Needs the environment installed once (launch/setup.sh). Exit status is
# refresh_corpus.py's: 0 done / nothing new / already running, 2 bad input,
# 3 download or checksum failure, 4 a stage failed — alert on non-zero.
set -uo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 3 ]; then
  echo "usage: $0 CORPUS_ROOT MIRROR_URL VOCAB_FILE [flags...]" >&2
  exit 2
fi
CORPUS="$1"; MIRROR="$2"; VOCAB="$3"; shift 3
exec "$ROOT_DIR/.venv/bin/python" "$ROOT_DIR/tools/refresh_corpus.py" \
  --root="$CORPUS" --mirror_url="$MIRROR" --vocab_file="$VOCAB" "$@"
