"""Command-line tasks as pure functions of a composed config (tests call them directly)."""
