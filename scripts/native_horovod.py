"""Install Horovod into this Python (the host's validation environment, .venv).

`stackbuild validate --native` runs its Horovod pass with this Python's Horovod. It is
compiled as the CPU images' builder stage compiles it (recipes/cpu.yaml: version, patches,
HOROVOD_* switches of the pytorch-cpu and tensorflow-cpu variants, here in one wheel with
both frameworks' ops), against this Python's PyTorch and TensorFlow and the host's MPICH.
The wheel is cached under $STACKBUILD_CACHE/wheels/horovod-native-<key> (default
~/.cache/stackbuild), the key covering everything that changes the binary; a hit installs
without compiling.

    .venv/bin/python scripts/native_horovod.py
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from stackbuild.recipe.loader import load_recipe
from stackbuild.recipe.matrix import expand_matrix, select_variant
from stackbuild.render.context import BuildContext

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cpu.yaml"
VARIANTS = ("pytorch-cpu", "tensorflow-cpu")
#: Horovod's setup_requires; without build isolation they must be installed.
BUILD_REQUIREMENTS = ("setuptools", "wheel", "packaging", "cloudpickle", "psutil", "pyyaml", "cffi")


@dataclass(frozen=True)
class HorovodBuild:
    """What the images' builder stage would compile, for both frameworks at once."""

    version: str
    patches: tuple[tuple[Path, int], ...]  # (file, -p level), in order
    environment: dict[str, str]

    @classmethod
    def from_recipe(cls) -> HorovodBuild:
        variants = expand_matrix(load_recipe(RECIPE))
        contexts = [BuildContext(select_variant(variants, name)) for name in VARIANTS]
        env: dict[str, str] = {}
        for ctx in contexts:
            env.update(ctx.horovod_environment)
        for framework in ("PYTORCH", "TENSORFLOW"):
            env.pop(f"HOROVOD_WITHOUT_{framework}", None)
            env[f"HOROVOD_WITH_{framework}"] = "1"
        first = contexts[0]
        patches = zip(first.variant.patch_files, first.settings.horovod.patches, strict=True)
        return cls(
            first.settings.horovod.version,
            tuple((path, patch.strip) for path, patch in patches),
            dict(sorted(env.items())),
        )

    def key(self) -> str:
        """Everything that changes the binary: this build, patch contents, frameworks, MPI."""
        material = {
            "version": self.version,
            "patches": [[hashlib.sha256(p.read_bytes()).hexdigest(), s] for p, s in self.patches],
            "environment": self.environment,
            "torch": version("torch"),
            "tensorflow": version("tensorflow-cpu"),
            "python": platform.python_version(),
            "mpi": mpich_version(),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]

    def compile(self, out: Path) -> None:
        """Download the sdist, apply the recipe's patches, build the wheel into `out`."""
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp)
            sdist_spec = f"horovod=={self.version}"
            pip("download", "--no-deps", "--no-binary", ":all:", sdist_spec, "-d", tmp)
            with tarfile.open(next(src.glob("horovod-*.tar.gz"))) as sdist:
                sdist.extractall(src, filter="data")
            tree = next(p for p in src.iterdir() if p.is_dir())
            for path, strip in self.patches:
                print(f"native-horovod: applying {path.name}", flush=True)
                with path.open("rb") as patch:
                    subprocess.run(
                        ["patch", f"-p{strip}", "--batch", "--forward", "--quiet"],
                        stdin=patch,
                        cwd=tree,
                        check=True,
                    )
            pip("install", *BUILD_REQUIREMENTS)
            env = {**os.environ, **self.environment, "MAKEFLAGS": f"-j{os.cpu_count() or 1}"}
            pip("wheel", "--no-build-isolation", "--no-deps", str(tree), "-w", str(out), env=env)


def mpich_version() -> str:
    """`mpichversion`'s report: Horovod links against this MPI."""
    try:
        return subprocess.run(["mpichversion"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise SystemExit(
            "native-horovod: mpichversion not found: install mpich and libmpich-dev "
            "(scripts/apt-packages.txt; scripts/setup-host.sh does)"
        ) from None


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, env=env)


def main() -> None:
    build = HorovodBuild.from_recipe()
    cache = Path(os.environ.get("STACKBUILD_CACHE") or Path.home() / ".cache" / "stackbuild")
    target = cache / "wheels" / f"horovod-native-{build.key()}"
    if list(target.glob("horovod-*.whl")):
        print(f"native-horovod: compiled wheel cache hit ({target.name}), no compile")
    else:
        print(
            f"native-horovod: cache miss ({target.name}), compiling Horovod {build.version} "
            "for PyTorch and TensorFlow (about 3 minutes on 2 cores)",
            flush=True,
        )
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        partial.mkdir(parents=True, exist_ok=True)
        try:
            build.compile(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(target)  # only complete wheels are ever found in the cache
    pip("install", str(next(target.glob("horovod-*.whl"))))
    check = "import horovod.torch, horovod.tensorflow"
    subprocess.run([sys.executable, "-c", check], check=True)
    print("native-horovod: Horovod with PyTorch and TensorFlow ops installed")


if __name__ == "__main__":
    main()
