"""Beam transforms and job entry points for prepro. Imports prepro, never the reverse."""
