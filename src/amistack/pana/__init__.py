"""amistack.pana — see ARCHITECTURE.md."""
