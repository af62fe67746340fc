"""Run backends behind one interface (base.py): local, postgres, temporal."""

from flotilla.graphs.backends.base import (
    ApprovalForbidden, BackendUnavailable, Decision, RunBackend, RunNotFound, RunNotWaiting, Submission,
)

__all__ = ["RunBackend", "Submission", "Decision", "RunNotFound", "RunNotWaiting", "ApprovalForbidden", "BackendUnavailable"]
