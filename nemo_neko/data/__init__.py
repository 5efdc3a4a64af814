"""Correction data: records, importers, tokenisation, samples and packing. See README.md."""
