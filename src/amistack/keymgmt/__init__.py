"""amistack.keymgmt — see ARCHITECTURE.md."""
