#!/usr/bin/env bash
# The main job, from a fresh Debian/Ubuntu machine (as root): set up the host; render and lint
# every shipped recipe with the real linters; build the CPU stack's images (Horovod compiled
# from source with the recipe's patches, in a builder stage); validate each image by training
# the science workloads in it on 1 and 2 ranks (PyTorch: DDP under torchrun and Horovod under
# horovodrun; TensorFlow: Horovod); run the example notebooks in it (its Jupyter kernel, with
# IPyParallel engines started by Slurm: `stackbuild notebooks`); export it for
# Shifter/podman-hpc (squashfs).
# Exits non-zero if any build or validation fails; reports are under $STACKBUILD_OUT.
#   STACKBUILD_VARIANTS  variants to build, RECIPE/VARIANT or VARIANT (of recipes/cpu.yaml),
#                        e.g. "pytorch-cpu gpu/pytorch-gpu knl/tensorflow-knl"
#                        (default: pytorch-cpu)
#   STACKBUILD_OUT       output directory (default: out)
# A GPU image validated on a machine without a GPU, or a KNL image on a CPU without AVX-512,
# is stack-checked, and its CPU-runnable training checks run, but it is not validated: the
# job says so, does not export it, and exits non-zero.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-host.sh
variants=${STACKBUILD_VARIANTS:-pytorch-cpu}
out=${STACKBUILD_OUT:-out}
sb=.venv/bin/stackbuild

echo "== render and lint every shipped recipe"
$sb lint
for recipe in recipes/*.yaml; do
  $sb render "$recipe" -o "$out/render/$(basename "$recipe" .yaml)"
done
$sb doctor

status=0
for item in $variants; do
  recipe=cpu
  variant=$item
  if [[ $item == */* ]]; then
    recipe=${item%%/*}
    variant=${item#*/}
  fi
  dir=$out/$recipe/$variant
  echo "== build $recipe/$variant"
  $sb build "$recipe" --variant "$variant" --output "$out/$recipe"
  framework=${variant%%-*}
  # --launcher auto: PyTorch DDP under torchrun and Horovod under horovodrun, one report each.
  echo "== validate $variant (1 and 2 ranks, every engine)"
  if $sb validate "$dir" --framework "$framework" --output "$out/validation/$variant"; then
    if [ -d "$dir/kernels" ]; then
      echo "== notebooks in $variant (its kernel; 2 IPyParallel engines started by Slurm)"
      if ! $sb notebooks "$dir"; then
        echo "== $variant FAILED its notebooks: not exported (see $dir/notebooks/report.html)" >&2
        status=1
        continue
      fi
    fi
    echo "== export $variant for Shifter / podman-hpc"
    $sb export "$dir" --to squashfs --output "$out/$recipe/$variant.sqsh" --force
  else
    echo "== $variant FAILED validation: not exported (see the reports)" >&2
    status=1
  fi
done
echo "== reports: $out/validation/*/*/report.html, $out/*/*/notebooks/report.html; records: $out/*/*/validation.json"
exit $status
