"""amistack.bench: what `amistack bench ...` runs, each benchmark with its baseline in the same run.

It sits just below `cli/` (ARCHITECTURE.md), so it may drive the engines over real sockets through
`runtime/` and over the virtual clock through `sim/`; the protocol packages hold no measurement
code. One module per benchmark: `auth` (PANA + EAP-PSK authentications/s, `echo` its raw UDP
baseline), `echonet` and `echonet_codec`, `eventlog` (with `sign`), `meter`, `ingest` (with
`postgres`, the throwaway cluster the PostgreSQL tests use too), `collection`.
"""
