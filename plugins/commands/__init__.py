"""CLI commands contributed by plugins (human evaluation)."""
