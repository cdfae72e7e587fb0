"""Fleets of workloads: the drivers that integrate their platforms, and the host that keeps them up."""
