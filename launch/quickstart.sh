#!/usr/bin/env bash
# Quickstart, end to end: Wikipedia dump (path or URL) -> documents -> shards ->
# vocab -> pretraining records -> a small teacher -> cached teacher labels ->
# a distilled student -> held-out evaluation, the teacher/student benchmark
# table (out/benchmark/benchmark.md + .png) and the student as a SavedModel.
#   launch/quickstart.sh DUMP_PATH_OR_URL[,MORE...] [OUTPUT_DIR]
# ~15 minutes on 2 CPU cores for the sample dump. Installs what is missing
# first (launch/setup.sh). Every stage is resumable and a rerun with the same
# inputs does nothing. Env overrides:
#   corpus:   NUM_SHARDS, EVAL_FRACTION, VOCAB_SIZE, VOCAB_FILE (your own vocab.txt
#             instead of learning one), DUPE_FACTOR, MAX_SEQ_LENGTH, MAX_PREDICTIONS
#   models:   TEACHER_CONFIG, TEACHER_CHECKPOINT (a teacher of your own, any format
#             tools/pretrain.py reads: then no teacher is trained), TEACHER_STEPS,
#             STUDENT_CONFIG, STUDENT_STEPS, BATCH_SIZE
#   labels:   TRUNCATION_FACTOR (K), LABEL_METHOD (topk|sampled), TEMPERATURE
#   STOP_AFTER=records  stops after the corpus stages (no training).
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
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

# --- corpus: extract, shard, vocab, records ---------------------------------
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
  --num_shards="${NUM_SHARDS:-8}" --eval_fraction="${EVAL_FRACTION:-0.05}"
VOCAB="${VOCAB_FILE:-$OUT/vocab/vocab.txt}"
if [ -z "${VOCAB_FILE:-}" ]; then
  "$PY" "$ROOT/tools/build_vocab.py" --input_dir="$OUT/shards" --output_file="$VOCAB" \
    --vocab_size="${VOCAB_SIZE:-8192}"
fi
"$PY" "$ROOT/tools/create_pretraining_data.py" --input_dir="$OUT/shards" \
  --output_dir="$OUT/records" --vocab_file="$VOCAB" \
  --max_seq_length="${MAX_SEQ_LENGTH:-128}" --max_predictions_per_seq="${MAX_PREDICTIONS:-20}" \
  --dupe_factor="${DUPE_FACTOR:-2}"
if [ "${STOP_AFTER:-}" = "records" ]; then
  echo "quickstart: done; records in $OUT/records (stats.json and manifest.json in each stage dir)"
  exit 0
fi

# --- teacher: yours, or a small one pretrained here ------------------------
BATCH="${BATCH_SIZE:-32}"
TEACHER_CONFIG="${TEACHER_CONFIG:-teacher_4l_256d}"
TEACHER="${TEACHER_CHECKPOINT:-$OUT/teacher}"
if [ -z "${TEACHER_CHECKPOINT:-}" ]; then
  steps="${TEACHER_STEPS:-600}"
  "$PY" "$ROOT/tools/pretrain.py" --bert_config_file="$TEACHER_CONFIG" \
    --input_dir="$OUT/records" --output_dir="$TEACHER" --optimizer=adamw \
    --learning_rate=1e-3 --train_batch_size="$BATCH" --num_train_steps="$steps" \
    --num_warmup_steps=$((steps / 10)) --save_checkpoints_steps=200 \
    --log_every_steps=50
  TEACHER_CONFIG="$TEACHER/checkpoints/bert_config.json"
fi

# --- run the teacher once: cached top-K labels ------------------------------
"$PY" "$ROOT/tools/extract_teacher_labels.py" --bert_config_file="$TEACHER_CONFIG" \
  --init_checkpoint="$TEACHER" --vocab_file="$VOCAB" --input_dir="$OUT/records" \
  --output_dir="$OUT/labels" --truncation_factor="${TRUNCATION_FACTOR:-16}" \
  --label_method="${LABEL_METHOD:-topk}" --temperature="${TEMPERATURE:-1.0}"

# --- the student, from the cache only -----------------------------------------
steps="${STUDENT_STEPS:-600}"
"$PY" "$ROOT/tools/distill.py" --student_config="${STUDENT_CONFIG:-student_2l_128d}" \
  --vocab_file="$VOCAB" --teacher_labels_dir="$OUT/labels" --output_dir="$OUT/student" \
  --optimizer=adamw --learning_rate=1e-3 --train_batch_size="$BATCH" \
  --num_train_steps="$steps" --num_warmup_steps=$((steps / 10)) \
  --save_checkpoints_steps=200 --log_every_steps=50

# --- evaluate, compare, export (skipped when newer than the student) -----------
fresh() { [ -e "$1" ] && [ "$1" -nt "$OUT/student/COMPLETED" ]; }
if fresh "$OUT/student_eval.json"; then echo "evaluate: up to date"; else
  "$PY" "$ROOT/tools/evaluate.py" --checkpoint="$OUT/student" --input_dir="$OUT/labels" \
    --output_json="$OUT/student_eval.json"
fi
if fresh "$OUT/benchmark/benchmark.md"; then echo "benchmark: up to date"; else
  "$PY" "$ROOT/tools/benchmark.py" --input_dir="$OUT/labels" --output_dir="$OUT/benchmark" \
    --models="teacher=$TEACHER_CONFIG:$TEACHER,student=:$OUT/student"
fi
if fresh "$OUT/student_savedmodel/saved_model.pb"; then echo "export: up to date"; else
  "$PY" "$ROOT/tools/export.py" --checkpoint="$OUT/student" --export_dir="$OUT/student_savedmodel"
fi
cat "$OUT/benchmark/benchmark.md"
echo "quickstart: done; table in $OUT/benchmark/benchmark.md, student SavedModel in $OUT/student_savedmodel"
