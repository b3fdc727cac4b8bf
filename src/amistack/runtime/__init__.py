"""amistack.runtime — see ARCHITECTURE.md."""
