"""Hardware-in-the-loop: simulators of every device type, rigs, fault injection, benchmarks."""
