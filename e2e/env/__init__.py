"""Launchers for the real infrastructure: PostgreSQL, Kafka (KRaft), Kubernetes, and the
local single-node cluster (`cluster`: the control plane plus containerd, kubelet,
kube-proxy and CoreDNS on this host, with images built by `images`).

One module per part, one place that pins versions (`versions`). Used alike by the pytest
fixtures (`pytest_plugin`), `make up`, `make cluster-up` and `make setup` (`cli`). Only the
standard library and `cryptography` are needed to install and start the parts, so setup
runs before anything else in the virtualenv is used.
"""
