"""One TLS context per process for our HTTP clients (Replicate's API, its output files, http inputs).

httpx loads the CA bundle for every client it builds, about 35 ms of CPU each, and a run
builds two or three. Shared, it is loaded once per process: in the run worker zygote, before
any worker is forked (see ``orchestration/warm_up.py``).
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The verifying context httpx would build by default (certifi's CA bundle)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())
