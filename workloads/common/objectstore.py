"""An S3-compatible object store, from environment variables: the archive's connection.

The client is obstore (Rust's `object_store`, with a typed asyncio API): request signing,
retries with backoff, checksums and conditional writes (`mode="create"` sends
`If-None-Match: *`, so an object is written once and a second writer gets
`AlreadyExistsError`, never an overwrite) come from a maintained library, not from code
here. (boto3/aiobotocore would pin python-dateutil below 3, which the kubernetes client
this project also runs cannot have.)

| variable | default | meaning |
|---|---|---|
| `<P>_ENDPOINT` | (empty: no store) | `http(s)://host:port` of the S3 API |
| `<P>_BUCKET` | (required with an endpoint) | the bucket |
| `<P>_PREFIX` | (empty) | a key prefix inside the bucket, e.g. the venue's name |
| `<P>_REGION` | us-east-1 | the region requests are signed for |
| `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` | (required with an endpoint) | credentials |

`<P>` is the workload's own prefix (the matcher's is `MATCHER_ARCHIVE`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from obstore.store import S3Store


class ObjectStoreConfigError(ValueError):
    """A required setting is missing; the message names the variable."""


@dataclass(frozen=True)
class ObjectStoreSettings:
    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    prefix: str = ""
    region: str = "us-east-1"

    @classmethod
    def from_env(
        cls, prefix: str, env: Mapping[str, str] = os.environ
    ) -> ObjectStoreSettings | None:
        """The store `<prefix>_*` names, or None when `<prefix>_ENDPOINT` is empty."""
        endpoint = env.get(f"{prefix}_ENDPOINT", "").strip()
        if not endpoint:
            return None
        values = {
            f"{prefix}_BUCKET": env.get(f"{prefix}_BUCKET", "").strip(),
            "AWS_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID", "").strip(),
            "AWS_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY", "").strip(),
        }
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise ObjectStoreConfigError(
                f"{prefix}_ENDPOINT is set, so {', '.join(missing)} must be too"
            )
        if not endpoint.startswith(("http://", "https://")):
            raise ObjectStoreConfigError(f"{prefix}_ENDPOINT={endpoint!r} is not an http(s) URL")
        return cls(
            endpoint=endpoint,
            bucket=values[f"{prefix}_BUCKET"],
            access_key_id=values["AWS_ACCESS_KEY_ID"],
            secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
            prefix=env.get(f"{prefix}_PREFIX", "").strip().strip("/"),
            region=env.get(f"{prefix}_REGION", "us-east-1").strip() or "us-east-1",
        )

    def env(self, prefix: str) -> dict[str, str]:
        """The environment variables that give this store to a workload (`from_env`)."""
        return {
            f"{prefix}_ENDPOINT": self.endpoint,
            f"{prefix}_BUCKET": self.bucket,
            f"{prefix}_PREFIX": self.prefix,
            f"{prefix}_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


def open_store(settings: ObjectStoreSettings, timeout: float = 10.0) -> S3Store:
    """A client for the bucket, path-style (every S3-compatible server takes it), every
    object under `settings.prefix`. Requests time out after `timeout` seconds and are
    retried by the library for at most as long again: a slow store delays the archive,
    never the caller's own loop."""
    return S3Store(
        settings.bucket,
        prefix=settings.prefix or None,
        endpoint=settings.endpoint,
        access_key_id=settings.access_key_id,
        secret_access_key=settings.secret_access_key,
        region=settings.region,
        virtual_hosted_style_request=False,
        client_options={
            "allow_http": settings.endpoint.startswith("http://"),
            "timeout": timedelta(seconds=timeout),
            "connect_timeout": timedelta(seconds=min(timeout, 3.0)),
        },
        retry_config={
            "max_retries": 3,
            "retry_timeout": timedelta(seconds=timeout),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
        },
    )
