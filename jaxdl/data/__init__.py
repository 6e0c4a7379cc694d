"""Data: readers, synthetic sets with known answers, and batching. Nothing here downloads in tests."""
