#!/usr/bin/env bash
# Train and export the shipped default GAN (`make train-default`): CPU, tiny config, ~30 min on 2 cores.
#   1. a synthetic cohort (`reface synth`: ROBEX-derived identities x sessions, brain masks included)
#   2. `reface train --config tiny` (8 mm whole head, 4 mm and 2 mm patches; per-stage time budgets)
#   3. copy the EMA generator (safetensors + JSON) into src/reface/resources/
# Override with environment variables: WORK, N_SUBJECTS, SESSIONS, SEED, DEVICE, EXTRA (more train flags).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
WORK="${WORK:-$ROOT/runs/default}"
N_SUBJECTS="${N_SUBJECTS:-12}"
SESSIONS="${SESSIONS:-2}"
SEED="${SEED:-1}"
DEVICE="${DEVICE:-cpu}"
EXTRA="${EXTRA:-}"
RESOURCES="$ROOT/src/reface/resources"

mkdir -p "$WORK"
if [ ! -f "$WORK/cohort/participants.tsv" ]; then
    "$PY" -m reface.cli synth "$WORK/cohort" --n "$N_SUBJECTS" --seed "$SEED" --sessions "$SESSIONS"
fi

# shellcheck disable=SC2086
"$PY" -m reface.cli train --data "$WORK/cohort" --out "$WORK/run" --config tiny --seed 0 \
    --device "$DEVICE" $( [ -f "$WORK/run/state.pt" ] && echo --resume ) $EXTRA

cp "$WORK/run/model.safetensors" "$RESOURCES/default_model.safetensors"
cp "$WORK/run/model.json" "$RESOURCES/default_model.json"
ls -l "$RESOURCES"/default_model.*
echo "exported the default model; update $RESOURCES/MODEL_CARD.md with $WORK/run/log.jsonl and samples/"
