"""The built-in document-triage agents: extract → analyze → decide → write."""
