"""amistack: a secure smart-metering (AMI) system. See ARCHITECTURE.md for the map."""

__version__ = "0.1.0"
