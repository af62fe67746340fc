"""The read-only /audit web page for the compliance role."""

from flotilla.audit.web.app import create_audit_app

__all__ = ["create_audit_app"]
