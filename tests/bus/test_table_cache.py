"""`TableCache`: one entry per distinct point table, found per device by its own mapping."""

from __future__ import annotations

from citynerve.gateway.api import PointConfig, TableCache


def test_devices_with_the_same_point_objects_share_one_built_value() -> None:
    built: list[tuple[str, ...]] = []

    def build(points: dict[str, PointConfig], extra: int) -> tuple[str, ...]:
        built.append(tuple(points))
        return (*points, str(extra))

    cache: TableCache[tuple[str, ...]] = TableCache(build)
    shared = {"v": PointConfig(unit="V"), "a": PointConfig(unit="A")}
    devices = {f"d{i}": dict(shared) for i in range(100)}  # own mapping each, same point objects
    values = {cache.get((d, 1), points, 1) for d, points in devices.items()}
    assert len(values) == 1 and len(built) == 1
    assert cache.get(("d0", 2), devices["d0"], 2) == ("v", "a", "2") and len(built) == 2  # args count
    # other point objects (a device with its own overrides): its own value
    own = {"v": PointConfig(unit="V", scale=10.0), "a": shared["a"]}
    assert cache.get(("d100", 1), own, 1) == ("v", "a", "1") and len(built) == 3
    # the same names in another order are another table
    cache.get(("d101", 1), {"a": shared["a"], "v": shared["v"]}, 1)
    assert len(built) == 4
    # a reload gives a device a new mapping of new objects: built again, not the old value
    reloaded = {"v": PointConfig(unit="kV")}
    assert cache.get(("d0", 1), reloaded, 1) == ("v", "1") and len(built) == 5
    # ... and the device's old table is still shared by the others
    assert cache.get(("d1", 1), devices["d1"], 1) == ("v", "a", "1") and len(built) == 5


def test_bounded_by_clearing() -> None:
    cache: TableCache[int] = TableCache(lambda points: len(points), tables=4, keys=8)
    for i in range(50):
        assert cache.get(i, {"p": PointConfig(), **({"q": PointConfig()} if i % 2 else {})}) == 1 + i % 2
    assert len(cache._by_key) <= 8 and len(cache._shared) <= 4
