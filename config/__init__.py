"""Shipped package data (installed as `citynerve.config`): device profiles, rule packs, example
configs and the release public key. No code: read it through `gateway.shipped`."""
