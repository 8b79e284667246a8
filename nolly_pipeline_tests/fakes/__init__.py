"""Fakes of external services used by the test-suite.

Names are re-exported lazily so that ``python -m nolly_pipeline_tests.fakes.replicate_api``
does not import the module twice (runpy warns about that).
"""

from typing import Any

__all__ = [
    "Behavior",
    "FakeReplicate",
    "Fault",
    "OutputContext",
    "PredictionRecord",
    "RecordedRequest",
    "RemoteFakeReplicate",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nolly_pipeline_tests.fakes import replicate_api

        return getattr(replicate_api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
