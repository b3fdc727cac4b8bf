"""The smart meter: metering model, switch, events, and the secure module that holds its keys."""
