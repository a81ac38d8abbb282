"""Bring your own model: a coordinator uploads a trained model, answers its card's questions, confirms the target
layer on a preview, and the worker checks it (workers/onboarding.py) before it is served."""
