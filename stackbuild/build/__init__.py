"""The container-engine layer: a rendered build context in, a tagged image and files out.

hostconfig.py   what the host knows: pip's CA bundle and find-links, apt's mirror, cache
context.py      <context>/variant.json -> BuildSpec (host defaults resolved)
base.py         base image: reuse, import the cached rootfs, or debootstrap + podman import
engines.py      PodmanBuilder / BuildahBuilder (Docker, Apptainer: argv only); tags on success
progress.py     rich progress for a running build
images.py       podman adapter for local storage (inspect, tag, remove)
manifest.py     manifest.json next to the image: IDs, git revision, size, package lists
sbom.py         the image's packages (run in it) as CycloneDX: sbom.cdx.json, its OCI artifact
export.py       squashfs / OCI archive / SIF
validation_record.py   reader for validation.json (written by the validation stage)
publish.py      push every tag once validation passed, then the SBOM; digests to published.json
doctor.py       is this machine ready to build? each check names its fix
"""
