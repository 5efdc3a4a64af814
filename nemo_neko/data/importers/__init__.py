"""Importers: published correction datasets -> :class:`~nemo_neko.data.records.CorrectionRecord`."""
