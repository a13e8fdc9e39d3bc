"""Validated device configs that repeat, held once.

A gateway with a thousand meters of one profile keeps a thousand validated `DeviceConfig`s for its
whole life, read and never changed (the models are frozen). Validation gives each of them its own
copy of the profile's point table (the point models inside are already shared) and pydantic's own
set of the names of the fields that were given (728 bytes for a Modbus device). Measured at 1,000
devices (tracemalloc, docs/benchmarks.md "Gateway footprint"): 0.46 MB of table copies and 0.93 MB
of field-name sets. `share` puts the one shared table back and lets devices (and their locations)
with the same given fields share one set; devices at equal locations share one `Location` (0.41 MB
at 1,000 meters of one address code).

Safe because config models are frozen: pydantic only adds to that set on attribute assignment,
which a frozen model refuses, and `model_copy` copies the set before it changes it.
"""

from __future__ import annotations

from pydantic import BaseModel

from citynerve.gateway.api import DeviceConfig, PointConfig


class Shared:
    """What the devices of one config load share (one per load: nothing outlives the config)."""

    def __init__(self) -> None:
        self._field_sets: dict[frozenset[str], set[str]] = {}
        self._locations: dict[tuple[object, ...], BaseModel] = {}

    def device(self, device: DeviceConfig, points: dict[str, PointConfig]) -> DeviceConfig:
        """`device`, holding `points` itself instead of validation's copy of it (when the copy holds
        the same point models: a driver's validator may have built its own) and shared field sets."""
        held = device.points
        if (
            held is not points
            and held.keys() == points.keys()
            and all(held[k] is p for k, p in points.items())
        ):
            device.__dict__["points"] = points
        self._fields_set(device)
        location = getattr(device, "location", None)
        if isinstance(location, BaseModel):
            self._fields_set(location)
            device.__dict__["location"] = self._location(location)
        return device

    def _location(self, location: BaseModel) -> BaseModel:
        """One model for equal locations (the meters of one block share its address code and
        nothing else): 413 bytes a device less. Frozen, so no holder can change it for another."""
        if not location.model_config.get("frozen"):
            return location
        values = tuple(location.__dict__.items())
        key = (type(location), frozenset(location.model_fields_set), *values)
        try:
            return self._locations.setdefault(key, location)
        except TypeError:  # a field that cannot be hashed: this location keeps its own model
            return location

    def _fields_set(self, model: BaseModel) -> None:
        if not model.model_config.get("frozen"):
            return  # a model that can be assigned to adds to its own set: it keeps it
        names: set[str] = model.__pydantic_fields_set__
        shared = self._field_sets.setdefault(frozenset(names), names)
        if shared is not names:
            object.__setattr__(model, "__pydantic_fields_set__", shared)
