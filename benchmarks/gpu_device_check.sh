#!/usr/bin/env bash
# Validate the harness natively on one NVIDIA GPU and benchmark it against this project's
# CPU numbers: CosmoFlow, climate and the GAN at 1 rank (PyTorch; TensorFlow if given),
# torch.distributed with NCCL and Horovod with NCCL at world size 1 (where Horovod is
# installed), and full-size CosmoFlow samples/s against the published V100 figure.
# Writes benchmarks/results/gpu_device_check.json (or --out). Takes ~5 minutes on a GPU
# node once the frameworks are installed.
#
#   bash benchmarks/gpu_device_check.sh                  # venv + PyPI: recipes/gpu.yaml's pins
#   bash benchmarks/gpu_device_check.sh --wheels DIR     # the same pins, from a wheel folder
#   bash benchmarks/gpu_device_check.sh --python python3 # a Python that already has torch
#   bash benchmarks/gpu_device_check.sh --dry-run --python .venv/bin/python   # CPU mode
#
# --dry-run runs every step on the CPU with no GPU and installs nothing (it prints the
# install it would make); its results are this machine's CPU numbers, written to
# benchmarks/results/gpu_device_check_cpu.json, which the GPU run compares with.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER="$ROOT/benchmarks/gpu_device_check.py"
MODE=gpu
PY=""
TF_PY=""
WHEELS=""
WITH_TF=0
VENV="${TMPDIR:-/tmp}/stackbuild-gpu-check"
OUT=""
CONSTRAINTS=""
SDIST=""
ONLY=()

die() {  # message, exit status
    echo "gpu_device_check: $1" >&2
    exit "${2:-2}"
}

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --dry-run          CPU mode: no GPU needed, nothing installed (see above)
  --python PY        use PY's PyTorch as it is (no venv, no install; recorded as not pinned
                     unless it is torch 2.13.0)
  --tf-python PY     also run the TensorFlow jobs with PY
  --wheels DIR       install the pinned set from DIR (pip --no-index --find-links DIR);
                     a Horovod wheel in DIR is installed too. With --python, only what
                     --horovod-sdist needs (cffi, pycparser) comes from DIR
  --with-tensorflow  also install tensorflow[and-cuda] (its pinned CUDA 12 set) into a
                     second venv (~3.7 GB from PyPI)
  --horovod-sdist F  build Horovod from this sdist (horovod-0.28.1.tar.gz, with the recipe's
                     patches) against the PyTorch under test: NCCL GPU operations, Gloo (and
                     MPI where mpicc is found); needs nvcc, cmake, g++ and cffi (from --wheels
                     if given); 2-4 minutes on 16 cores. --dry-run applies the patches only
  --constraints FILE pip constraints instead of recipes/gpu.yaml's (needs no PyYAML)
  --venv DIR         where to make the venvs (default $TMPDIR/stackbuild-gpu-check)
  --out FILE         result file (default benchmarks/results/gpu_device_check.json), written
                     after every run
  --only PART        run only the jobs whose name contains PART (repeatable), e.g.
                     --only "cosmoflow full" --only ddp
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) MODE=cpu ;;
        --python) PY="${2:?--python needs a path}"; shift ;;
        --tf-python) TF_PY="${2:?--tf-python needs a path}"; shift ;;
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
        --with-tensorflow) WITH_TF=1 ;;
        --constraints) CONSTRAINTS="${2:?--constraints needs a file}"; shift ;;
        --horovod-sdist) SDIST="${2:?--horovod-sdist needs a file}"; shift ;;
        --only) ONLY+=(--only "${2:?--only needs a job name part}"); shift ;;
        --venv) VENV="${2:?--venv needs a folder}"; shift ;;
        --out) OUT="${2:?--out needs a file}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done
if [ -z "$OUT" ]; then
    OUT="$ROOT/benchmarks/results/gpu_device_check.json"
    [ "$MODE" = cpu ] && OUT="$ROOT/benchmarks/results/gpu_device_check_cpu.json"
fi
[ -z "$WHEELS" ] || [ -d "$WHEELS" ] || die "--wheels $WHEELS is not a folder"
[ -z "$SDIST" ] || [ -f "$SDIST" ] || die "--horovod-sdist $SDIST is not a file"

# 1. A GPU, before anything is installed: on a node without one this stops here.
if [ "$MODE" = gpu ]; then
    command -v nvidia-smi >/dev/null ||
        die "no NVIDIA driver here (nvidia-smi not found): run on a GPU node, or --dry-run"
    GPUS="$(nvidia-smi -L 2>&1)" || die "nvidia-smi sees no GPU: $GPUS"
    echo "GPU: $GPUS"
else
    echo "dry run: CPU mode, no GPU needed, nothing installed"
fi

# 2. The pinned framework set (recipes/gpu.yaml pip.constraints), unless --python is given.
constraints_file() {  # framework -> path of a constraints file
    local file="$VENV/constraints-$1.txt"
    mkdir -p "$VENV"
    if [ -n "$CONSTRAINTS" ]; then
        cp "$CONSTRAINTS" "$file"
    else
        "${PY:-python3}" "$HELPER" constraints --framework "$1" >"$file"
    fi
    echo "$file"
}

install_set() {  # framework, venv dir, packages...
    local framework="$1" dir="$2"
    shift 2
    local cfile source
    cfile="$(constraints_file "$framework")"
    local pip_args=(install --quiet --constraint "$cfile")
    if [ -n "$WHEELS" ]; then
        pip_args+=(--no-index --find-links "$WHEELS")
        source="wheels in $WHEELS"
    else
        source="PyPI"
    fi
    echo "$framework: $(grep -c . "$cfile") pins from recipes/gpu.yaml, from $source"
    if [ "$MODE" = cpu ]; then
        echo "  would run: python3 -m venv $dir && $dir/bin/pip ${pip_args[*]} $*"
        return
    fi
    python3 -m venv "$dir" || die "python3 -m venv failed (Debian/Ubuntu: apt install python3-venv)"
    "$dir/bin/pip" "${pip_args[@]}" "$@" ||
        die "installing the pinned $framework set from $source failed (see pip's message above)"
    if [ -n "$WHEELS" ] && compgen -G "$WHEELS/horovod-*.whl" >/dev/null; then
        "$dir/bin/pip" "${pip_args[@]}" "$WHEELS"/horovod-*.whl ||
            echo "gpu_device_check: the Horovod wheel in $WHEELS did not install" >&2
    fi
}

SOURCE="$PY as given"
if [ -z "$PY" ]; then
    install_set pytorch "$VENV/pytorch" torch numpy
    if [ "$MODE" = cpu ]; then
        PY="$ROOT/.venv/bin/python"
        [ -x "$PY" ] || PY=python3
        SOURCE="dry run: $PY as given (the pinned set was not installed)"
    else
        PY="$VENV/pytorch/bin/python"
        SOURCE="pinned set (recipes/gpu.yaml) from ${WHEELS:-PyPI}"
    fi
else
    constraints_file pytorch >/dev/null || true  # checks that the pins can be read
fi
if [ "$WITH_TF" = 1 ] && [ -z "$TF_PY" ]; then
    install_set tensorflow "$VENV/tensorflow" "tensorflow[and-cuda]" numpy
    [ "$MODE" = gpu ] && TF_PY="$VENV/tensorflow/bin/python"
fi
"$PY" -c 'import numpy, torch' 2>/dev/null || die "$PY cannot import numpy and torch"
echo "PyTorch: $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
if [ "$MODE" = gpu ]; then
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' ||
        die "torch in $PY sees no GPU: a CPU build, or a driver older than the wheels' CUDA \
(torch 2.13 is CUDA 13.0: driver R580 or newer)"
fi

# 2b. Horovod with NCCL, compiled here against the PyTorch under test (optional).
HVD_SITE="$VENV/horovod-site"
pip_into_site() {  # packages... -> installed into $HVD_SITE (from --wheels if given)
    local from=()
    [ -z "$WHEELS" ] || from=(--no-index --find-links "$WHEELS")
    "$PY" -m pip install --quiet --target "$HVD_SITE" "${from[@]}" "$@"
}

build_horovod() {
    local src="$VENV/horovod-src" dist="$VENV/horovod-dist" strip patch
    rm -rf "$src" "$dist" && mkdir -p "$src" "$dist" "$HVD_SITE"
    tar -xzf "$SDIST" -C "$src" --strip-components=1
    while read -r strip patch; do
        patch -d "$src" "-p$strip" --batch --forward --quiet <"$patch" ||
            { HVD_NOTE="patch $patch does not apply to $SDIST"; return 1; }
    done < <("$PY" "$HELPER" patches)
    echo "Horovod: $(basename "$SDIST") unpacked, $("$PY" "$HELPER" patches | wc -l) patches applied"
    if [ "$MODE" = cpu ]; then
        echo "  dry run: not compiled (needs nvcc and a GPU build of torch)"
        return
    fi
    export PYTHONPATH="$HVD_SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$HVD_SITE/bin:$PATH"
    "$PY" -c 'import cffi' 2>/dev/null || pip_into_site cffi ||
        { HVD_NOTE="its PyTorch build needs cffi: --wheels with cffi, pycparser"; return 1; }
    "$PY" -c 'import cloudpickle, psutil, yaml, packaging' 2>/dev/null ||
        pip_into_site cloudpickle psutil pyyaml packaging ||
        { HVD_NOTE="it needs cloudpickle, psutil, pyyaml and packaging"; return 1; }
    local site nvcc cuda_home nccl_h nccl_home="$VENV/nccl" cc
    site="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    nvcc="$(command -v nvcc || true)"
    [ -n "$nvcc" ] || [ ! -x /usr/local/cuda/bin/nvcc ] || nvcc=/usr/local/cuda/bin/nvcc
    [ -n "$nvcc" ] || nvcc="$(find "$site/nvidia" -path '*/bin/nvcc' -type f 2>/dev/null | head -n 1)"
    [ -n "$nvcc" ] || { HVD_NOTE="no nvcc (PATH, /usr/local/cuda, cuda-toolkit in $site)"; return 1; }
    cuda_home="$(dirname "$(dirname "$nvcc")")"
    if [ ! -e "$cuda_home/lib64" ]; then  # the CUDA wheels: as the images' builder stage does
        ln -s lib "$cuda_home/lib64"
        local cudart
        cudart="$(find "$cuda_home/lib" -maxdepth 1 -name 'libcudart.so.*' | sort | head -n 1)"
        [ -e "$cuda_home/lib/libcudart.so" ] || ln -s "$(basename "$cudart")" "$cuda_home/lib/libcudart.so"
    fi
    # Horovod must use torch's own NCCL: a private NCCL home of links into torch's wheel.
    nccl_h="$(find "$site/nvidia" -name nccl.h -path '*nccl*' 2>/dev/null | head -n 1)"
    [ -n "$nccl_h" ] || { HVD_NOTE="no nccl.h in $site/nvidia (torch's nvidia-nccl wheel)"; return 1; }
    mkdir -p "$nccl_home/lib"
    ln -sfn "$(dirname "$nccl_h")" "$nccl_home/include"
    ln -sf "$(dirname "$(dirname "$nccl_h")")/lib/libnccl.so.2" "$nccl_home/lib/libnccl.so"
    cc="$("$PY" -c 'import torch; print("%d%d" % torch.cuda.get_device_capability())')"
    local mpi=HOROVOD_WITHOUT_MPI
    ! command -v mpicc >/dev/null || mpi=HOROVOD_WITH_MPI
    echo "Horovod: compiling with NCCL (CUDA $cuda_home, NCCL $nccl_home, sm_$cc, $mpi)"
    (cd "$src" && env MAKEFLAGS="-j$(nproc)" CUDA_HOME="$cuda_home" HOROVOD_CUDA_HOME="$cuda_home" \
        HOROVOD_NCCL_HOME="$nccl_home" HOROVOD_NCCL_LINK=SHARED HOROVOD_GPU=CUDA \
        HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_BUILD_CUDA_CC_LIST="$cc" HOROVOD_WITH_PYTORCH=1 \
        HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1 "$mpi=1" \
        CMAKE_POLICY_VERSION_MINIMUM=3.5 \
        PATH="$cuda_home/bin:$PATH" timeout 300 "$PY" -m pip wheel --quiet \
        --no-build-isolation --no-deps . -w "$dist") >"$VENV/horovod-build.log" 2>&1 ||
        { HVD_NOTE="did not compile: $(tail -n 15 "$VENV/horovod-build.log")"; return 1; }
    "$PY" -m pip install --quiet --no-deps --target "$HVD_SITE" "$dist"/horovod-*.whl
    "$PY" -c 'import horovod, horovod.torch as h; print("Horovod", horovod.__version__,
        "NCCL built:", bool(h.nccl_built()))' || { HVD_NOTE="it does not import"; return 1; }
}
# A Horovod that does not build is reported as not run; the other runs go on.
HVD_NOTE=""
if [ -n "$SDIST" ] && ! build_horovod; then
    echo "gpu_device_check: Horovod not built: $HVD_NOTE" >&2
fi

# 3. The runs, checks and comparison (benchmarks/gpu_device_check.py).
args=(run --mode "$MODE" --python "$PY" --out "$OUT" --source "$SOURCE")
[ -n "$TF_PY" ] && args+=(--tf-python "$TF_PY")
[ -n "$HVD_NOTE" ] && args+=(--note "Horovod build (--horovod-sdist): $HVD_NOTE")
args+=("${ONLY[@]}")
exec "$PY" "$HELPER" "${args[@]}"
