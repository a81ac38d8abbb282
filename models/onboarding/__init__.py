"""Onboarding a coordinator's own model: file formats and the checks run before it is served."""
