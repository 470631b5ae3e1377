"""hilif.model: the HiLIF two-stream detector and its local relationship constraint loss (no I/O, no CLI)."""
