"""Test helpers of sdapi.node (test-only code, never shipped in the collection)."""
