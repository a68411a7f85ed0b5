"""Datasets: signed versions, anonymisation, serving and provenance."""
