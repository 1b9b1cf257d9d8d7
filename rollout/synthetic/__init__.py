"""Seeded synthetic data for the demo and the benchmarks: a provider's inventory and its mail logs."""
