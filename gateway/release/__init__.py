"""Releases: offline bundles (verify, install side by side) and A/B updates with rollback."""
