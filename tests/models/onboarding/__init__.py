"""Tests of onboarding a coordinator's own model."""
