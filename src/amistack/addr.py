"""Transport addresses as every engine sees them: (host, port), IPv4 or IPv6 text form."""

Addr = tuple[str, int]
