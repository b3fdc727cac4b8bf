"""amistack.radius — see ARCHITECTURE.md."""
