"""Measurements every run records, one module per concern: sizes (parameters by role, bytes),
peak_memory (device and process peaks), timing (a synchronized stopwatch), environment (versions,
commit, device) and energy (RAPL counters)."""
