"""Celery workers: load a job, its pixels and its model, call `models/`, store the results."""
