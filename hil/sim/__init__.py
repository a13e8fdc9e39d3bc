"""Device simulators: real protocol peers for tests, demos and benchmarks."""
