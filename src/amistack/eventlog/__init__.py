"""Tamper-evident meter event log: RFC 9162 Merkle tree, signed heads, proofs, verification."""

from amistack.eventlog.log import (
    Appended,
    CheckpointPolicy,
    EventLog,
    FsyncPolicy,
    LogConfig,
    LogStoreError,
)
from amistack.eventlog.merkle import Frontier, MerkleTree, verify_consistency, verify_inclusion
from amistack.eventlog.record import (
    EventRecord,
    EventType,
    HeadKind,
    LogFormatError,
    LogHeader,
    Mode,
    SignedHead,
)
from amistack.eventlog.verify import (
    HeadStore,
    InclusionProof,
    Reason,
    TrustedHead,
    Verdict,
    prove_inclusion,
    verify_event,
    verify_file,
    verify_head_update,
    verify_lines,
)

__all__ = [
    "Appended",
    "CheckpointPolicy",
    "EventLog",
    "EventRecord",
    "EventType",
    "Frontier",
    "FsyncPolicy",
    "HeadKind",
    "HeadStore",
    "InclusionProof",
    "LogConfig",
    "LogFormatError",
    "LogHeader",
    "LogStoreError",
    "MerkleTree",
    "Mode",
    "Reason",
    "SignedHead",
    "TrustedHead",
    "Verdict",
    "prove_inclusion",
    "verify_consistency",
    "verify_event",
    "verify_file",
    "verify_head_update",
    "verify_inclusion",
    "verify_lines",
]
