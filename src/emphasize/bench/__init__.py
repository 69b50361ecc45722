"""Benchmarks: speed/memory of the guidance methods (more runners land here)."""
