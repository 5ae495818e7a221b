"""Every pinned version of a real part, in one place.

A change here invalidates the matching cache entry (binaries and jars are cached by
version), so an upgrade is a one-line change followed by `make setup`.
"""

from typing import Final

KUBERNETES: Final = "v1.34.4"
"""Kubernetes 1.34: the newest minor that still runs on cgroup v1 by default (1.35 refuses)."""

ETCD: Final = "v3.6.16"
"""etcd 3.6, built from the module proxy: Debian's 3.4 is older than kube-apiserver supports."""

KAFKA: Final = "4.3.1"
"""Apache Kafka in KRaft mode, assembled from Maven Central (`org.apache.kafka:kafka_2.13`)."""

LOG4J: Final = "2.24.3"
"""log4j2 binding for Kafka's slf4j 1.7 API (`log4j-slf4j-impl`), so the broker logs to a file."""

POSTGRES_MAJOR: Final = "15"
"""Debian bookworm's PostgreSQL; the server binaries live in /usr/lib/postgresql/<major>/bin."""

DEBIAN_PACKAGES: Final = ("postgresql", "openssl")
"""Debian packages `make setup` installs (once, idempotently) for the parts above."""

COREDNS: Final = "v1.12.4"
"""CoreDNS, `go install`ed into the cache: the cluster DNS, run on the host."""

CRI_TOOLS: Final = "v1.34.0"
"""crictl, matching Kubernetes 1.34's CRI: removes pod sandboxes on `cluster-down`."""

HELM: Final = "v3.19.5"
"""Helm 3, `go install`ed into the cache: installs the operator's chart, lints it in tests."""

ARGOCD: Final = "v3.2.6"
"""Argo CD's application controller and repo server (one binary), built from the module proxy
with its own `replace` block (`e2e/env/go/argocd`): what syncs `gitops/` in the tests."""

ARGOCD_DEBIAN_PACKAGES: Final = ("redis-server", "git")
"""Argo CD's cache (Redis 7.0) and the git its repo server runs and `git daemon` serves."""

SEAWEEDFS: Final = "v0.0.0-20261109003541-7506e5f91cd6"
"""SeaweedFS 4.53 (`weed`), built from the module proxy through a wrapper module with its
`replace` line (`e2e/env/go/seaweedfs`): the S3 store of the archive and the backups."""

PAUSE: Final = "3.10"
"""Tag of the locally built pause image (a static C binary, see `e2e/env/pause/pause.c`)."""

DEBIAN_RELEASE: Final = "bookworm"
"""The Debian release debootstrap makes the image base from; its python3 is 3.11."""

CLUSTER_DEBIAN_PACKAGES: Final = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "buildah",
    "debootstrap",
    "iptables",
    "iproute2",
    "gcc",
    "libc6-dev",
)
"""Debian packages of the local cluster's node: the runtime (containerd 1.6, runc 1.1), the
CNI plugins (bridge, portmap, host-local, loopback), buildah and debootstrap for images,
iptables for kube-proxy, and gcc with libc6-dev for the static pause binary."""

JAEGER: Final = "v1.75.0"
"""Jaeger v2 (the module's v1.75.0 tag), built from the module proxy through `e2e/env/go/jaeger`:
the trace store (in-memory, OTLP in, query API out) of the trace tests and `make up`."""

PROMETHEUS_OPERATOR: Final = "v0.85.0"
"""The Prometheus operator whose CRDs (PodMonitor, PrometheusRule, ServiceMonitor; read from its
Go module's `example/prometheus-operator-crd`) validate the chart's monitoring objects."""
