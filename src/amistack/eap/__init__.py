"""amistack.eap — see ARCHITECTURE.md."""
