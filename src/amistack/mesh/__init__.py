"""The field network: 802.15.4 link frames and security, 6LoWPAN, RPL, joining through relays."""
