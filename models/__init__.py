"""Lumen's model library in plain torch: networks, model cards, preprocessing, explainers, uncertainty.

Never imports the web app, the workers, SQLAlchemy or Celery: tensors in, tensors out.
"""
