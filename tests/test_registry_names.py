"""Names once: an object registers under its own name (timm's register_model), never renamed afterwards."""
from __future__ import annotations

import pytest

from edgerobust.registry import REGISTRIES, Registry


def test_the_name_comes_from_the_object():
    registry = Registry("test thing")
    try:
        @registry.register
        class Plain:
            """a thing named by its class"""

        @registry.register(help="explicit help")
        class Dashed:
            name = "dashed-name"  # not an identifier: the class says it, once

        @registry.register
        def builder():
            """a thing named by its function"""

        assert registry.names() == ["builder", "dashed-name", "plain"]
        assert Plain.name == "plain" and Dashed.name == "dashed-name"  # instances carry the registry's key
        assert registry.help("plain") == "a thing named by its class"
        assert registry.help("dashed-name") == "explicit help"
        assert registry.get("builder") is builder
        with pytest.raises(ValueError, match="registered twice"):
            registry.register(type("Plain", (), {}))
        with pytest.raises(ValueError, match="'dashed-name' registered as 'other'"):
            registry.register("other")(Dashed)
    finally:
        REGISTRIES.pop("test thing", None)
