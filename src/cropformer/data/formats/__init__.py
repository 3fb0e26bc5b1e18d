"""Readers that turn each annotation source into records (see ``records.py``)."""
