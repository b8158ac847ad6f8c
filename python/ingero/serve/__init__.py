"""Serve: the MCP server through which AI agents read ingero databases."""
