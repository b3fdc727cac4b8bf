"""amistack.sim — see ARCHITECTURE.md."""
