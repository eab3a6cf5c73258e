"""Builders the tests share: data files (helpers.data) and tiny training runs (helpers.train)."""
