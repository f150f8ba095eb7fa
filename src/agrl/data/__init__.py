"""Data: label schemes (schemes.py), records and their loaders, checks and splits (records.py), and the
importers of public relevance data sets (importers.py). Pure Python: no torch, no TRL."""
