"""Launchers for the real infrastructure: PostgreSQL, Kafka (KRaft) and Kubernetes.

One module per part, one place that pins versions (`versions`). Used alike by the pytest
fixtures (`pytest_plugin`), `make up` and `make setup` (`cli`). Only the standard library
and `cryptography` are needed to install and start the parts, so setup runs before anything
else in the virtualenv is used.
"""
