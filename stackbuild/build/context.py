"""A rendered build context (Containerfile + variant.json) read into a typed BuildSpec."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackbuild.build.hostconfig import cache_dir, host_ca_bundle, host_wheelhouse, read_pip_config
from stackbuild.errors import StackbuildError

CONTAINERFILE = "Containerfile"
VARIANT_FILE = "variant.json"
#: Build volumes mounted read-only unless variant.json says otherwise.
READ_ONLY_VOLUMES = frozenset({"wheelhouse"})


class ContextError(StackbuildError):
    """A build context is missing a file or its variant.json is malformed."""


@dataclass(frozen=True)
class BuildVolume:
    """A host directory bound into every RUN step (never part of the image)."""

    name: str
    host: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class Bootstrap:
    """How the base image is made when it is not in local storage."""

    suite: str
    variant: str
    mirror: str | None = None


@dataclass(frozen=True)
class BuildSpec:
    """Everything a builder needs, with host defaults already resolved."""

    context_dir: Path
    recipe: str
    recipe_hash: str
    variant: str
    repository: str
    tags: tuple[str, ...]
    base_image: str
    bootstrap: Bootstrap | None
    builder_image: str | None = None
    secrets: dict[str, Path] = field(default_factory=dict)
    volumes: tuple[BuildVolume, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def containerfile(self) -> Path:
        """The Containerfile inside the context."""
        return self.context_dir / CONTAINERFILE

    @property
    def image_refs(self) -> list[str]:
        """repository:tag for every tag."""
        return [f"{self.repository}:{tag}" for tag in self.tags]

    @property
    def base_images(self) -> list[str]:
        """Every image the Containerfile starts FROM that must be in local storage."""
        return list(dict.fromkeys(i for i in (self.base_image, self.builder_image) if i))

    @property
    def labels(self) -> dict[str, str]:
        """Labels that tie an image to its recipe."""
        return {
            "org.stackbuild.recipe": self.recipe,
            "org.stackbuild.recipe-hash": self.recipe_hash,
            "org.stackbuild.variant": self.variant,
        }


def load_build_spec(context_dir: Path, cache: Path | None = None) -> BuildSpec:
    """Read <context>/variant.json and resolve null secrets and volumes from the host."""
    context_dir = context_dir.resolve()
    variant_path = context_dir / VARIANT_FILE
    for required in (context_dir / CONTAINERFILE, variant_path):
        if not required.is_file():
            raise ContextError(
                f"{required} does not exist",
                hint="render the recipe first (stackbuild render) and pass its output directory",
            )
    try:
        data = json.loads(variant_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ContextError(f"{variant_path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    return spec_from_dict(data, context_dir, cache or cache_dir(), variant_path)


def spec_from_dict(
    data: dict[str, Any], context_dir: Path, cache: Path, where: Path | str = VARIANT_FILE
) -> BuildSpec:
    """Check the variant.json shape and build a BuildSpec from it."""
    get = _Getter(data, str(where))
    image = get.mapping("image")
    tags = get.list_of_str("image.tags", image.get("tags"))
    if not tags:
        raise ContextError(f"{where}: image.tags is empty", hint="give the image at least one tag")
    base = get.mapping("base")
    boot = base.get("bootstrap")
    bootstrap = None
    if boot is not None:
        if not isinstance(boot, dict) or not isinstance(boot.get("suite"), str):
            raise ContextError(f"{where}: base.bootstrap must be null or {{suite, variant}}")
        bootstrap = Bootstrap(
            boot["suite"], str(boot.get("variant") or "minbase"), boot.get("mirror") or None
        )
    build = data.get("build") or {}
    if not isinstance(build, dict):
        raise ContextError(f"{where}: build must be a mapping")
    return BuildSpec(
        context_dir=context_dir,
        recipe=get.string("recipe"),
        recipe_hash=get.string("recipe_hash"),
        variant=get.string("variant"),
        repository=get.string("image.repository", image.get("repository")),
        tags=tuple(tags),
        base_image=get.string("base.image", base.get("image")),
        bootstrap=bootstrap,
        builder_image=base.get("builder_image") or None,
        secrets=_resolve_secrets(build.get("secrets") or {}, cache, str(where)),
        volumes=_resolve_volumes(build.get("volumes") or {}, cache, str(where)),
        build_args={str(k): str(v) for k, v in (build.get("build_args") or {}).items()},
    )


def _resolve_secrets(raw: dict[str, Any], cache: Path, where: str) -> dict[str, Path]:
    """Host file for every secret id; null ca_bundle/pip_conf get host defaults."""
    secrets: dict[str, Path] = {}
    pip = None
    for name, value in raw.items():
        if value is not None:
            path = Path(value).expanduser()
        elif name == "ca_bundle":
            pip = pip or read_pip_config()
            found = host_ca_bundle(pip)
            if found is None:
                raise ContextError(
                    f"{where}: build.secrets.ca_bundle is null and this host has no CA bundle",
                    hint="set `pip config set global.cert PATH` or give the path in the recipe",
                )
            path = found
        elif name == "pip_conf":
            # A secret that is not passed is silently absent in podman 4.3, so always pass one.
            path = cache / "secrets" / "empty-pip.conf"
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text("[global]\n", encoding="utf-8")
        else:
            raise ContextError(f"{where}: build.secrets.{name} is null; give a host file path")
        if not path.is_file():
            raise ContextError(
                f"{where}: build.secrets.{name}: {path} is not a file",
                hint="create the file or point the recipe at an existing one",
            )
        secrets[name] = path
    return secrets


def _resolve_volumes(raw: dict[str, Any], cache: Path, where: str) -> tuple[BuildVolume, ...]:
    """Host directory for every build volume; null wheelhouse/wheel_cache get host defaults."""
    volumes = []
    for name, value in raw.items():
        if value is None:  # the recipe does not use this volume
            continue
        if not isinstance(value, dict) or not isinstance(value.get("target"), str):
            raise ContextError(f"{where}: build.volumes.{name} must be {{host, target}}")
        host = value.get("host")
        if host is not None:
            path = Path(host).expanduser()
        elif name == "wheelhouse":
            # No find-links on this host: bind an empty folder so the Containerfile still works.
            path = host_wheelhouse() or cache / "empty-wheelhouse"
        else:
            path = cache / {"wheel_cache": "wheels", "pip_cache": "pip"}.get(name, name)
        read_only = bool(value.get("read_only", name in READ_ONLY_VOLUMES))
        if not read_only or host is None:
            path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise ContextError(f"{where}: build.volumes.{name}.host: {path} is not a directory")
        volumes.append(BuildVolume(name, path.resolve(), value["target"], read_only))
    return tuple(volumes)


class _Getter:
    """Typed access to variant.json keys with errors that name the key path."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def string(self, key: str, value: Any = None) -> str:
        value = self.data.get(key) if value is None and "." not in key else value
        if not isinstance(value, str) or not value:
            raise ContextError(f"{self.where}: {key} must be a non-empty string, got {value!r}")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise ContextError(f"{self.where}: {key} must be a mapping, got {value!r}")
        return value

    def list_of_str(self, key: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ContextError(f"{self.where}: {key} must be a list of strings, got {value!r}")
        return value
