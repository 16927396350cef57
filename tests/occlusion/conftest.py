"""Fixtures of the occlusion engine's self-tests."""

from __future__ import annotations

import pytest

from pytest_medrobust import occlusion


@pytest.fixture
def clean_registry(monkeypatch):
    """Run-time registrations made by a test are dropped afterwards."""
    monkeypatch.setattr(occlusion.registry, "_registered", dict(occlusion.registry._registered))
    return occlusion.registry._registered
