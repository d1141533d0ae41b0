"""GPU resource expansion (work in progress)."""
