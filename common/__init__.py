"""Pieces shared by the three command lines and the libraries below them (hilif-prep, hilif-train, hilif-eval)."""
