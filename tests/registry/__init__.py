"""Tests of checkpoint storage, the registry service and `astro ckpt`."""
