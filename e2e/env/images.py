"""Container images for the local cluster, built without Docker or a registry.

Three images, each cached so that a rebuild without changes takes seconds:

- a Debian base (`debootstrap --variant=minbase` with python3), tarred once into the cache
  and turned into an image `FROM scratch`: Docker Hub's `python:3.11-slim` is not reachable;
- the pause image, from `pause/pause.c` compiled with `gcc -static`;
- the project's image, from the repository's `Dockerfile` with `BASE_IMAGE` set to that base.
  pip cannot reach the package index from inside a build here (the build does not trust the
  CA this machine's registry access relies on, and the machine's CA bundle must never be
  copied into an image), so the wheels are downloaded on the host into `build/wheels` and
  installed offline inside the build.

Each image ends as an OCI archive in the cache, which `containerd.Containerd.load` imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from e2e.env import paths, versions, web

PROJECT_IMAGE = "localhost/exchange-platform:dev"
"""The project's image as pods name it (`imagePullPolicy: Never`: it is never pulled)."""

PAUSE_IMAGE = f"localhost/pause:{versions.PAUSE}"
"""containerd's `sandbox_image`."""

_BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
_PAUSE_SOURCE = Path(__file__).resolve().parent / "pause" / "pause.c"
_DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class ImageArchive:
    """An image saved as an OCI archive; `key` changes whenever the image does."""

    name: str
    path: Path

    @property
    def key(self) -> str:
        stat = self.path.stat()
        return f"{self.name}@{stat.st_size}:{stat.st_mtime_ns}"


def images_dir() -> Path:
    path = paths.cache_dir() / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def buildah(*args: str, capture: bool = False) -> str:
    """Run buildah on the project's own storage (overlay) in the cache, not the machine's."""
    storage = paths.cache_dir() / "buildah"
    argv = [
        "buildah",
        "--root", str(storage / "root"),
        "--runroot", str(storage / "run"),
        "--storage-driver", "overlay",
        *args,
    ]  # fmt: skip
    result = subprocess.run(
        argv, check=False, text=True, stdout=subprocess.PIPE if capture else None
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with exit code {result.returncode}")
    return result.stdout or ""


def image_id(name: str) -> str | None:
    """The local image's id in buildah's storage, or None when there is none."""
    out = buildah("images", "--json", capture=True)
    for image in json.loads(out or "[]"):
        if name in (image.get("names") or []):
            return str(image["id"])
    return None


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (deb822 `.sources` or a classic list)."""
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if re.match(r"^[A-Za-z-]+:", line)
            )
            suites = fields.get("Suites", "").split()
            if versions.DEBIAN_RELEASE in suites and "main" in fields.get("Components", ""):
                return fields["URIs"].split()[0]
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                words = line.split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == versions.DEBIAN_RELEASE:
                    return next(w for w in words[1:] if "://" in w)
    return _DEFAULT_MIRROR


def _base_key() -> str:
    spec = f"{versions.DEBIAN_RELEASE} minbase {','.join(_BASE_PACKAGES)}"
    return hashlib.sha256(spec.encode()).hexdigest()[:10]


def base_image_name() -> str:
    return f"localhost/exchange-base:{versions.DEBIAN_RELEASE}-{_base_key()}"


def ensure_base_tar() -> Path:
    """debootstrap a minimal Debian with python3 once; the tar is cached by its package list."""
    tar = images_dir() / f"debian-{versions.DEBIAN_RELEASE}-minbase-{_base_key()}.tar"
    if tar.exists():
        return tar
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=images_dir()) as work:
        root = Path(work) / "root"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(_BASE_PACKAGES)}",
                versions.DEBIAN_RELEASE,
                str(root),
                apt_mirror(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / leftover).glob("*"):
                if item.is_file():
                    item.unlink()
        partial = tar.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], check=True
        )
        partial.rename(tar)
    return tar


def ensure_base() -> str:
    """The base image (`FROM scratch` + the debootstrap tar) in buildah's storage."""
    name = base_image_name()
    if image_id(name) is not None:
        return name
    tar = ensure_base_tar()
    with tempfile.TemporaryDirectory(prefix="base-context-") as context:
        os.link(tar, Path(context) / "base.tar")
        (Path(context) / "Containerfile").write_text(
            'FROM scratch\nADD base.tar /\nCMD ["python3"]\n'
        )
        buildah("bud", "--quiet", "--isolation", "chroot", "-t", name, context, capture=True)
    return name


def _push(name: str, archive: Path, image: str) -> ImageArchive:
    """Save `name` as an OCI archive, unless the archive already holds this image id."""
    stamp = archive.with_suffix(".id")
    if archive.exists() and stamp.exists() and stamp.read_text() == image:
        return ImageArchive(name, archive)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    buildah("push", "--quiet", name, f"oci-archive:{partial}:{name}")
    partial.rename(archive)
    stamp.write_text(image)
    return ImageArchive(name, archive)


def _pause_archive_path() -> Path:
    digest = hashlib.sha256(_PAUSE_SOURCE.read_bytes()).hexdigest()[:10]
    return images_dir() / f"pause-{versions.PAUSE}-{digest}.oci.tar"


def ensure_pause() -> ImageArchive:
    """The pause image from the static C binary (rebuilt when pause.c changes)."""
    archive = _pause_archive_path()
    if archive.exists():
        return ImageArchive(PAUSE_IMAGE, archive)
    with tempfile.TemporaryDirectory(prefix="pause-") as work:
        binary = Path(work) / "pause"
        subprocess.run(
            ["gcc", "-static", "-Os", "-s", "-Wall", "-o", str(binary), str(_PAUSE_SOURCE)],
            check=True,
        )
        container = buildah("from", "--quiet", "scratch", capture=True).strip()
        try:
            buildah("copy", "--quiet", container, str(binary), "/pause")
            buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container)
            buildah("commit", "--quiet", "--rm", container, PAUSE_IMAGE)
        except RuntimeError:
            buildah("rm", container)
            raise
    image = image_id(PAUSE_IMAGE)
    assert image is not None
    return _push(PAUSE_IMAGE, archive, image)


def runtime_requirements() -> list[str]:
    """The project's runtime dependencies, pinned to the versions in requirements.lock."""
    project = tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (paths.REPO_ROOT / "requirements.lock").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[_normalize(name)] = version
    wanted = []
    for requirement in project["dependencies"]:
        match = re.match(r"\s*([A-Za-z0-9._-]+)\s*(\[[^\]]*\])?", requirement)
        assert match, requirement
        name, extras = _normalize(match.group(1)), match.group(2) or ""
        wanted.append(f"{name}{extras}=={pins[name]}" if name in pins else f"{name}{extras}")
    return wanted


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def ensure_wheels() -> Path:
    """Download the cp311 wheels of the runtime dependencies into `build/wheels` (host side).

    Skipped when the requirement list and lock are unchanged since the last download.
    `requirements.txt` in that directory is what the Dockerfile installs.
    """
    wheels = paths.REPO_ROOT / "build" / "wheels"
    requirements = runtime_requirements()
    build_tools = ["setuptools>=69", "wheel"]
    lock = (paths.REPO_ROOT / "requirements.lock").read_bytes()
    key = hashlib.sha256(lock + "\n".join(requirements + build_tools).encode()).hexdigest()
    stamp = wheels / ".key"
    if stamp.exists() and stamp.read_text() == key:
        return wheels
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet",
            "--dest", str(wheels),
            "--only-binary=:all:",
            "--python-version", "3.11",
            "--constraint", str(paths.REPO_ROOT / "requirements.lock"),
            *requirements, *build_tools,
        ],
        check=True,
        env={**os.environ, "PIP_FIND_LINKS": ""},
    )  # fmt: skip
    (wheels / "requirements.txt").write_text("\n".join(requirements) + "\n")
    stamp.write_text(key)
    return wheels


def build_project() -> ImageArchive:
    """Build the project's image from the Dockerfile on the local base; only changed layers
    are rebuilt (`--layers`), and an unchanged image is not saved or imported again."""
    base = ensure_base()
    ensure_wheels()
    web.ensure_built()  # the gateway serves it; the Dockerfile copies dist/
    buildah(
        "bud",
        "--quiet",
        "--layers",
        "--isolation", "chroot",
        "--build-arg", f"BASE_IMAGE={base}",
        "-t", PROJECT_IMAGE,
        "-f", str(paths.REPO_ROOT / "Dockerfile"),
        str(paths.REPO_ROOT),
        capture=True,  # the image id; image_id() reads it below
    )  # fmt: skip
    image = image_id(PROJECT_IMAGE)
    assert image is not None
    return _push(PROJECT_IMAGE, images_dir() / "exchange-platform-dev.oci.tar", image)


def project_archive() -> ImageArchive | None:
    """The last built project image, if `make image` has run."""
    archive = images_dir() / "exchange-platform-dev.oci.tar"
    return ImageArchive(PROJECT_IMAGE, archive) if archive.exists() else None


def pause_archive() -> ImageArchive | None:
    """The pause image built from the current pause.c, if it has been built."""
    archive = _pause_archive_path()
    return ImageArchive(PAUSE_IMAGE, archive) if archive.exists() else None


def timed_build() -> dict[str, float]:
    """Every image, with the seconds each step took (printed for `make image`)."""
    timings = {}
    for step, action in (
        ("base (debootstrap, cached)", ensure_base),
        ("pause image", ensure_pause),
        ("wheels (pip download, cached)", ensure_wheels),
        ("project image (buildah bud --layers)", build_project),
    ):
        start = time.monotonic()
        action()
        timings[step] = time.monotonic() - start
        print(f"image: {step} {timings[step]:.1f}s", file=sys.stderr, flush=True)
    return timings
