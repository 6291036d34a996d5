"""Celery tasks: thin wrappers that hand a command id to the worker runtime."""
