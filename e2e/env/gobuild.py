"""Build Kubernetes, etcd, Argo CD, SeaweedFS and Jaeger binaries from the Go module proxy,
cached by version.

`go install k8s.io/kubernetes/cmd/...@v` is refused because kubernetes' go.mod replaces
its staging modules with local paths; the wrapper module in `go/kubernetes` pins each of
them to the published `v0.<minor>.<patch>` instead (and copies kubernetes' godebug line).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from e2e.env import paths, versions

CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kubectl")
NODE = ("kube-scheduler", "kubelet", "kube-proxy")

GO_INSTALL = {
    "coredns": ("github.com/coredns/coredns", versions.COREDNS),
    "crictl": ("sigs.k8s.io/cri-tools/cmd/crictl", versions.CRI_TOOLS),
    "helm": ("helm.sh/helm/v3/cmd/helm", versions.HELM),
}
"""Commands whose modules have no `replace` directives, so plain `go install m@v` builds them."""


def binary(name: str) -> Path:
    """The cached binary for `name` at its pinned version (it may not be built yet).

    One directory per version keeps the file names plain, so `ps` shows `kube-apiserver`.
    """
    if name in GO_INSTALL:
        directory = paths.bin_dir() / f"{name}-{GO_INSTALL[name][1]}"
    elif name == "argocd":
        directory = paths.bin_dir() / f"argocd-{versions.ARGOCD}"
    elif name == "weed":
        directory = paths.bin_dir() / f"seaweedfs-{versions.SEAWEEDFS}"
    elif name == "jaeger":
        directory = paths.bin_dir() / f"jaeger-{versions.JAEGER}"
    else:
        version = versions.ETCD if name == "etcd" else versions.KUBERNETES
        directory = paths.bin_dir() / f"{'etcd' if name == 'etcd' else 'kubernetes'}-{version}"
    directory.mkdir(exist_ok=True)
    return directory / name


def _kube_ldflags() -> str:
    major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
    base = "k8s.io/component-base/version"
    return (
        f"-s -w -X {base}.gitVersion={versions.KUBERNETES} -X {base}.gitMajor={major} "
        f"-X {base}.gitMinor={minor} -X {base}.gitTreeState=clean"
    )


def _go_build(module: Path, package: str, out: Path, ldflags: str) -> None:
    partial = out.with_name(out.name + ".partial")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(partial), package],
        cwd=module,
        env=env,
        check=True,
    )
    partial.rename(out)


VERSION_LDFLAGS = {"helm": f"-X helm.sh/helm/v3/internal/version.version={versions.HELM}"}
"""Versions a module stamps only at release builds (else `helm version` says "v3.19")."""


def _go_install(package: str, version: str, out: Path) -> None:
    staging = out.parent.with_name(out.parent.name + ".partial")
    staging.mkdir(exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(staging), "GOFLAGS": "-buildvcs=false"}
    ldflags = f"-s -w {VERSION_LDFLAGS.get(out.name, '')}".strip()
    subprocess.run(
        ["go", "install", "-trimpath", "-ldflags", ldflags, f"{package}@{version}"],
        env=env,
        check=True,
    )
    (staging / out.name).rename(out)
    staging.rmdir()


ARGOCD_MODULE = "github.com/argoproj/argo-cd/v3"
SEAWEEDFS_PACKAGE = "github.com/seaweedfs/seaweedfs/weed"
JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
JAEGER_LDFLAGS = (
    f"-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion={versions.JAEGER}"
)
"""Jaeger stamps its version only in release builds; the module tag is what we pinned."""


def _build_argocd(out: Path) -> None:
    """Argo CD's one binary, and beside it (`crds/`) the CRDs of the same version."""
    version = versions.ARGOCD
    _go_build(
        paths.GO_MODULES / "argocd",
        f"{ARGOCD_MODULE}/cmd",
        out,
        f"-s -w -X {ARGOCD_MODULE}/common.version={version.lstrip('v')} "
        f"-X {ARGOCD_MODULE}/common.gitTreeState=clean",
    )
    found = subprocess.run(
        ["go", "mod", "download", "-json", f"{ARGOCD_MODULE}@{version}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    source = Path(json.loads(found.stdout)["Dir"]) / "manifests" / "crds"
    crds = out.parent / "crds"
    crds.mkdir(exist_ok=True)
    for crd in source.glob("*-crd.yaml"):
        shutil.copyfile(crd, crds / crd.name)


def ensure(names: tuple[str, ...]) -> dict[str, Path]:
    """Build each missing binary once; print how long each build took."""
    built = {}
    for name in names:
        out = binary(name)
        if not out.exists():
            start = time.monotonic()
            if name in GO_INSTALL:
                _go_install(*GO_INSTALL[name], out)
            elif name == "etcd":
                _go_build(paths.GO_MODULES / "etcd", ".", out, "-s -w")
            elif name == "argocd":
                _build_argocd(out)
            elif name == "weed":
                _go_build(paths.GO_MODULES / "seaweedfs", SEAWEEDFS_PACKAGE, out, "-s -w")
            elif name == "jaeger":
                _go_build(paths.GO_MODULES / "jaeger", JAEGER_PACKAGE, out, JAEGER_LDFLAGS)
            else:
                _go_build(
                    paths.GO_MODULES / "kubernetes",
                    f"k8s.io/kubernetes/cmd/{name}",
                    out,
                    _kube_ldflags(),
                )
            print(f"built {out.name} in {time.monotonic() - start:.0f}s", file=sys.stderr)
        built[name] = out
    return built
