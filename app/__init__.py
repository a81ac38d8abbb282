"""Lumen web application: pages, JSON API and DICOMweb. Never imports torch."""
