#!/usr/bin/env bash
# Quickstart: Wikipedia dump (path or URL) -> documents -> shards -> vocab -> records.
#   launch/quickstart.sh DUMP_PATH_OR_URL [OUTPUT_DIR]
# Installs what is missing first (launch/setup.sh). Every stage is resumable and a
# rerun with the same inputs does nothing. Env overrides: NUM_SHARDS, VOCAB_SIZE,
# VOCAB_FILE (use your own vocab.txt instead of learning one), DUPE_FACTOR,
# MAX_SEQ_LENGTH, MAX_PREDICTIONS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: $0 DUMP_PATH_OR_URL[,MORE...] [OUTPUT_DIR]" >&2
  exit 2
fi
INPUT="$1"
OUT="${2:-$ROOT/out}"
bash "$ROOT/launch/setup.sh"
PY="$ROOT/.venv/bin/python"
mkdir -p "$OUT"

dumps=()
IFS=',' read -ra items <<< "$INPUT"
for item in "${items[@]}"; do
  case "$item" in
    http://*|https://*) dumps+=("$("$PY" "$ROOT/tools/download_dump.py" --url="$item" --output_dir="$OUT/downloads")") ;;
    *) dumps+=("$item") ;;
  esac
done
joined="$(IFS=','; echo "${dumps[*]}")"

"$PY" "$ROOT/tools/extract_wiki.py" --input="$joined" --output_dir="$OUT/extract"
"$PY" "$ROOT/tools/shard_text.py" --input_dir="$OUT/extract" --output_dir="$OUT/shards" \
  --num_shards="${NUM_SHARDS:-8}"
VOCAB="${VOCAB_FILE:-$OUT/vocab/vocab.txt}"
if [ -z "${VOCAB_FILE:-}" ]; then
  "$PY" "$ROOT/tools/build_vocab.py" --input_dir="$OUT/shards" --output_file="$VOCAB" \
    --vocab_size="${VOCAB_SIZE:-8192}"
fi
"$PY" "$ROOT/tools/create_pretraining_data.py" --input_dir="$OUT/shards" \
  --output_dir="$OUT/records" --vocab_file="$VOCAB" \
  --max_seq_length="${MAX_SEQ_LENGTH:-128}" --max_predictions_per_seq="${MAX_PREDICTIONS:-20}" \
  --dupe_factor="${DUPE_FACTOR:-5}"
echo "quickstart: done; records in $OUT/records (stats.json and manifest.json in each stage dir)"
