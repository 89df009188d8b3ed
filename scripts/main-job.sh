#!/usr/bin/env bash
# The main job, from a fresh Debian/Ubuntu machine (as root): set up the host; render and lint
# every shipped recipe with the real linters; build the CPU stack's images (Horovod compiled
# from source with the recipe's patches, in a builder stage); validate each image by training
# the science workloads in it on 1 and 2 ranks (PyTorch: DDP under torchrun and Horovod under
# horovodrun; TensorFlow: Horovod); export it for Shifter/podman-hpc (squashfs).
# Exits non-zero if any build or validation fails; reports are under $STACKBUILD_OUT.
#   STACKBUILD_VARIANTS  variants of recipes/cpu.yaml to build (default: pytorch-cpu)
#   STACKBUILD_OUT       output directory (default: out)
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
for variant in $variants; do
  dir=$out/cpu/$variant
  echo "== build $variant"
  $sb build cpu --variant "$variant" --output "$out/cpu"
  framework=${variant%%-*}
  # --launcher auto: PyTorch DDP under torchrun and Horovod under horovodrun, one report each.
  echo "== validate $variant (1 and 2 ranks, every engine)"
  if $sb validate "$dir" --framework "$framework" --output "$out/validation/$variant"; then
    echo "== export $variant for Shifter / podman-hpc"
    $sb export "$dir" --to squashfs --output "$out/cpu/$variant.sqsh" --force
  else
    echo "== $variant FAILED validation: not exported (see the reports)" >&2
    status=1
  fi
done
echo "== reports: $out/validation/*/*/report.html; records: $out/cpu/*/validation.json"
exit $status
