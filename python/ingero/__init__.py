"""ingero: MCP-native GPU causal observability."""

from ingero._core import IngeroError, __version__

__all__ = ["IngeroError", "__version__"]
