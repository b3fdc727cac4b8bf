"""amistack.cli — see ARCHITECTURE.md."""
