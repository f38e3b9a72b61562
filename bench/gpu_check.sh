#!/usr/bin/env bash
# Every CUDA path of kws in one run (issue 10 item 11), all of it written into ONE results file.
#
#   bash bench/gpu_check.sh             # on a GPU machine, from anywhere (sized for < 8 minutes on one GPU)
#   bash bench/gpu_check.sh --dry-run   # the same steps on the CPU, small: tests this script's plumbing
#   KWS_GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh   # same as --dry-run
#   KWS_GPU_CHECK_ONLY=pytest-gpu,throughput bash bench/gpu_check.sh   # a rerun of some steps (setup always runs)
#
# Steps (each prints PASS/FAIL/SKIP and its seconds; a failure does not stop the others; the exit status is 1
# when any step failed): setup, nvidia-smi -L, torch/CUDA versions, the `gpu`-marked tests, `kws train`
# smoke runs in bf16 and fp16, Ctrl-C + `--resume` on the GPU, `torchrun -m kws train` and an NCCL
# all-reduce, `kws evaluate`, and bench/train_throughput.py with one v1-sized epoch (51,088 clips).
#
# Results: $KWS_GPU_CHECK_RESULTS, else $OUT/gpu_check_results.txt when $OUT is set, else
# ./gpu_check_results.txt (in the repo root). Every step's full output goes there, the summary last.
#
# A bare machine is set up first: without .venv, it makes one and runs `pip install -e .[dev]`. That needs
# PyPI only: the torch wheels on PyPI for Linux x86-64 are the CUDA builds (they bring the CUDA runtime,
# cuDNN and NCCL as nvidia-* wheels), so no other index is needed. On a machine with no index but a CUDA
# torch 2.11 of its own, set KWS_GPU_CHECK_WHEELS=DIR to a folder of wheels for what it lacks: the venv
# then uses the system's packages, and kws, its missing dependencies and nothing else come from DIR.
set -u -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
DEVICE=${KWS_GPU_CHECK_DEVICE:-cuda}
if [[ ${1:-} == --dry-run ]]; then
    DEVICE=cpu
elif [[ $# -gt 0 ]]; then
    echo "usage: bash bench/gpu_check.sh [--dry-run]" >&2
    exit 2
fi
if [[ $DEVICE != cuda && $DEVICE != cpu ]]; then
    echo "KWS_GPU_CHECK_DEVICE must be cuda or cpu, got '$DEVICE'" >&2
    exit 2
fi
if [[ -n ${KWS_GPU_CHECK_RESULTS:-} ]]; then
    RESULTS=$KWS_GPU_CHECK_RESULTS
elif [[ -n ${OUT:-} ]]; then
    RESULTS=$OUT/gpu_check_results.txt
else
    RESULTS=$REPO/gpu_check_results.txt
fi
mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The GPU run does the real sizes; the dry run keeps every step but makes it small enough for 2 CPU cores.
if [[ $DEVICE == cuda ]]; then
    SMOKE_ARGS=()  # smoke.yaml as it is: 4 epochs of 6 steps
    RESUME_STEPS=300  # long enough that the run is still going when it is interrupted
    THROUGHPUT_ARGS=(--precision bf16 --epoch-clips 51088)
else
    SMOKE_ARGS=(--max-steps 6)
    RESUME_STEPS=30
    THROUGHPUT_ARGS=(--skip-baseline --clips 64 --batch-size 16 --warmup 1 --steps 2 --rounds 1)
fi

SUMMARY=()
N_FAILED=0

log() { echo "$*" | tee -a "$RESULTS"; }

now() { echo "${EPOCHREALTIME:-$SECONDS}"; }

# step NAME COMMAND...: run COMMAND with its output appended to the results file, then one summary line.
# Exit status 77 (the autotools convention) means skipped.
step() {
    local name=$1 start status rc
    shift
    if [[ -n ${KWS_GPU_CHECK_ONLY:-} && ! " setup nvidia-smi versions tiny-dataset ${KWS_GPU_CHECK_ONLY//,/ } " =~ " $name " ]]; then
        SUMMARY+=("$(printf '%-4s  %-26s  (not in KWS_GPU_CHECK_ONLY)' SKIP "$name")")
        echo "${SUMMARY[-1]}" | tee -a "$RESULTS"
        return 0
    fi
    start=$(now)
    printf '\n=== %s: %s\n' "$name" "$*" >>"$RESULTS"
    "$@" >>"$RESULTS" 2>&1
    rc=$?
    if [[ $rc -eq 0 ]]; then
        status=PASS
    elif [[ $rc -eq 77 ]]; then
        status=SKIP
    else
        status=FAIL
        N_FAILED=$((N_FAILED + 1))
    fi
    local line
    line=$(printf '%-4s  %-26s %7.1f s' "$status" "$name" "$(echo "$(now) $start" | awk '{print $1 - $2}')")
    [[ $status == FAIL ]] && line+="  (exit $rc; its output is under '=== $name' above)"
    SUMMARY+=("$line")
    echo "$line"
    echo "--- $line" >>"$RESULTS"
    [[ $status != FAIL ]]
}

setup() {
    if [[ ! -x .venv/bin/python ]]; then
        if [[ -n ${KWS_GPU_CHECK_WHEELS:-} ]]; then
            # A machine with no package index: the machine's own torch plus the wheels of what it lacks,
            # installed with no index, then kws itself with no dependencies. The machine's python3 may be
            # a venv itself, whose packages --system-site-packages would not see: a .pth file adds them,
            # after the venv's own. Its pip does the installs (the venv gets none: no ensurepip needed),
            # and torchrun gets a shim in the venv, or the machine's own would start a python without kws.
            local theirs
            theirs=$(python3 -c 'import sysconfig, torch, torchaudio, pytest; print(sysconfig.get_paths()["purelib"])') ||
                return 1
            python3 -m venv --without-pip .venv &&
                .venv/bin/python -c 'import sys, sysconfig; open(sysconfig.get_paths()["purelib"] + "/machine.pth", "w").write(sys.argv[1] + "\n")' "$theirs" &&
                python3 -m pip --python .venv/bin/python install --quiet --no-index --no-deps "$KWS_GPU_CHECK_WHEELS"/*.whl &&
                python3 -m pip --python .venv/bin/python install --quiet --no-index --no-deps --no-build-isolation -e . &&
                printf '#!/bin/sh\nexec "%s/.venv/bin/python" -m torch.distributed.run "$@"\n' "$REPO" >.venv/bin/torchrun &&
                chmod +x .venv/bin/torchrun || return 1
        else
            python3 -m venv .venv && .venv/bin/pip install --quiet -e '.[dev]' || return 1
        fi
    fi
    export PATH=$REPO/.venv/bin:$PATH
    kws --help >/dev/null && echo "venv: $REPO/.venv ($(python --version))"
}

gpus() {
    if [[ $DEVICE == cpu ]]; then
        echo "dry run on the CPU: no GPU to list"
        return 77
    fi
    nvidia-smi -L
}

versions() {
    python - "$DEVICE" <<'EOF'
import sys

import torch
import torchaudio

print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, CUDA build {torch.version.cuda}")
print(f"cuDNN {torch.backends.cudnn.version()}, NCCL {torch.cuda.nccl.version() if torch.cuda.is_available() else '-'}")
print(f"CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device 0: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}")
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device: a CPU-only torch wheel, or no driver")
EOF
}

gpu_tests() {
    local out=$WORK/pytest.txt
    python -m pytest -q -p no:cacheprovider -m gpu -rs tests 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    [[ $rc -ne 0 ]] && return "$rc"
    # On the GPU a skipped gpu test is a test that did not run: a failure of this check.
    if [[ $DEVICE == cuda ]] && grep -q "skipped" "$out"; then
        echo "gpu-marked tests were skipped on a CUDA machine"
        return 1
    fi
}

make_data() {
    python - "$WORK/data" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, ".")  # the repository root: tests/ is a package
from tests.helpers.tiny_dataset import make_tiny_dataset  # numpy tones and chirps: no TTS, no download

manifests = make_tiny_dataset(Path(sys.argv[1]), n_train=24, n_val=8)
print({split: str(path) for split, path in manifests.items()})
EOF
}

TRAIN=$WORK/data/train_manifest.json
VAL=$WORK/data/validation_manifest.json

# train RUN_DIR PRECISION [more kws train options]: the smoke config on the tiny dataset
train() {
    local run=$1 precision=$2
    shift 2
    kws train --config configs/smoke.yaml --train-manifest "$TRAIN" --val-manifest "$VAL" \
        --run-dir "$run" --device "$DEVICE" --precision "$precision" "$@"
}

# checkpoint_step PATH: the step stored in a checkpoint; fails unless its model sits where it should
checkpoint_step() {
    python - "$1" "$DEVICE" <<'EOF'
import sys

import torch

from kws.checkpoint import load_for_inference

loaded = load_for_inference(sys.argv[1], torch.device(sys.argv[2]))
assert next(loaded.model.parameters()).device.type == sys.argv[2]
print(loaded.step)
EOF
}

smoke_train() {
    local run=$WORK/$1
    train "$run" "$1" "${SMOKE_ARGS[@]}" && echo "best.pt at step $(checkpoint_step "$run/best.pt")"
}

resume() {
    local run=$WORK/resume rc
    # `exec` in a subshell: $! is then kws itself, not a shell that would take the signal in its place
    (exec kws train --config configs/smoke.yaml --train-manifest "$TRAIN" --val-manifest "$VAL" \
        --run-dir "$run" --device "$DEVICE" --precision bf16 --epochs 1000 --max-steps "$RESUME_STEPS") &
    local pid=$!
    # Ctrl-C once the run has logged its first steps (kws's handler saves last.pt at the next step boundary)
    for _ in $(seq 1200); do
        [[ -s $run/metrics.jsonl ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -INT "$pid" 2>/dev/null
    wait "$pid"
    rc=$?
    if [[ $rc -ne 130 ]]; then
        echo "expected exit status 130 after SIGINT, got $rc (did the run end before the interrupt?)"
        return 1
    fi
    local stopped
    stopped=$(checkpoint_step "$run/last.pt") || return 1
    echo "interrupted: last.pt at step $stopped of $RESUME_STEPS"
    kws train --run-dir "$run" --resume --device "$DEVICE" || return 1
    local final
    final=$(checkpoint_step "$run/last.pt") || return 1
    echo "resumed: last.pt at step $final"
    [[ $final -eq $RESUME_STEPS ]] || { echo "expected step $RESUME_STEPS after --resume"; return 1; }
}

torchrun_train() {
    # One process: kws joins no process group in a world of one, so this checks the launch path on the
    # device; the nccl step below checks the collective itself.
    torchrun --standalone --nproc_per_node 1 -m kws train --config configs/smoke.yaml \
        --train-manifest "$TRAIN" --val-manifest "$VAL" --run-dir "$WORK/torchrun" --device "$DEVICE" \
        --precision bf16 --max-steps 12 && echo "best.pt at step $(checkpoint_step "$WORK/torchrun/best.pt")"
}

collective() {
    local backend=nccl
    [[ $DEVICE == cpu ]] && backend=gloo
    cat >"$WORK/collective.py" <<'EOF'
import sys

import torch
import torch.distributed as dist

from kws.train import distributed

backend, device_type = sys.argv[1], sys.argv[2]
dist.init_process_group(backend=backend)
device = torch.device(device_type, distributed.local_rank()) if device_type == "cuda" else torch.device("cpu")
x = torch.full((3,), float(dist.get_rank() + 1), device=device, dtype=torch.float64)
distributed.all_reduce_sum(x)
expected = sum(range(1, dist.get_world_size() + 1))
assert x.tolist() == [expected] * 3, x
print(f"{backend} all_reduce over {dist.get_world_size()} process(es) on {device}: {x.tolist()}")
dist.destroy_process_group()
EOF
    torchrun --standalone --nproc_per_node 1 "$WORK/collective.py" "$backend" "$DEVICE"
}

evaluate() {
    kws evaluate "$WORK/bf16/best.pt" "$VAL" --device "$DEVICE" --out "$WORK/eval" || return 1
    python -c "import json, sys; r = json.load(open(sys.argv[1])); print('report.json accuracy', r['accuracy'])" \
        "$WORK/eval/report.json"
}

throughput() {
    python bench/train_throughput.py --device "$DEVICE" "${THROUGHPUT_ARGS[@]}"
}

log "kws GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), device $DEVICE"
log "repo $REPO at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (modified)')"
log "results: $RESULTS"
step setup setup || {
    log "setup failed: nothing else can run"
    exit 1
}
export PATH=$REPO/.venv/bin:$PATH
export PYTHONUNBUFFERED=1
step nvidia-smi gpus
step versions versions
step pytest-gpu gpu_tests
step tiny-dataset make_data
step train-bf16 smoke_train bf16
step train-fp16 smoke_train 16
step resume resume
step torchrun-train torchrun_train
step collective collective
step evaluate evaluate
step throughput throughput

{
    printf '\n=== summary (%s)\n' "$DEVICE"
    printf '%s\n' "${SUMMARY[@]}"
    echo "$N_FAILED failed"
} >>"$RESULTS"
echo "$N_FAILED failed; everything is in $RESULTS"
[[ $N_FAILED -eq 0 ]]
