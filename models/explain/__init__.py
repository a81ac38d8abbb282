"""Attribution methods, one class per method behind `Explainer` (base.py); names in registry.py.

Import-light on purpose: import `models.explain.registry` (or a method's module) for the classes.
"""
