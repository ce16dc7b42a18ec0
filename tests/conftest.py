"""Shared fixtures: tiny reference models live in conftest_models.py."""

pytest_plugins = ["conftest_models"]
