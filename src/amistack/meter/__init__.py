"""The smart meter: metering model, switch, events (its secure module: `amistack.securemodule`)."""
