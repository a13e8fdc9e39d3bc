"""Maintenance scripts of the project (generated docs)."""
