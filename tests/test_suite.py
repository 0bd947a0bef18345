"""The suite's own guards: every test runs under a time limit (pytest-timeout), so a hung test fails."""

from __future__ import annotations

import pytest


def test_every_test_has_a_time_limit(request):
    assert request.config.pluginmanager.hasplugin("timeout"), "pip install -r requirements.txt (pytest-timeout)"
    assert float(request.config.getini("timeout")) == 300
    assert request.node.get_closest_marker("timeout") is None  # the ini limit applies to ordinary tests


def test_slow_tests_get_a_longer_limit(pytestconfig):
    from conftest import SLOW_TIMEOUT_S, pytest_collection_modifyitems

    class Item:
        def __init__(self, *marks):
            self.own = {mark.name: mark for mark in marks}

        def get_closest_marker(self, name):
            return self.own.get(name)

        def add_marker(self, mark):
            self.own[mark.mark.name] = mark.mark

    slow, fast, own = Item(pytest.mark.slow.mark), Item(), Item(pytest.mark.slow.mark, pytest.mark.timeout(60).mark)
    pytest_collection_modifyitems([slow, fast, own])
    assert slow.get_closest_marker("timeout").args == (SLOW_TIMEOUT_S,)
    assert fast.get_closest_marker("timeout") is None and own.get_closest_marker("timeout").args == (60,)
