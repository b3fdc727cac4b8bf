"""The technician's login on the handheld: access/'s identities, roles and lock-out, audited.

The handheld holds the technicians provisioned for it in its own `access.AccessStore`
(`amistack users add NAME --role INSTALLER --data-dir HANDHELD_DIR`): Argon2id passwords, 5
consecutive failures lock the name for 5 minutes (`LoginPolicy`), and a wrong name and a wrong
password get the same answer. Every login, failed login, refusal of an operation and logout is
an entry in the handheld's operator audit trail (`access.AuditTrail`, signed daily), with
`via = "handheld:<device>"`.
"""

from __future__ import annotations

from dataclasses import dataclass

from amistack.access.audit import AuditTrail
from amistack.access.users import AccessError, AccessStore, LoginRefused, Principal, check_name

__all__ = ["TechnicianDesk", "TechnicianSession"]


@dataclass(frozen=True)
class TechnicianSession:
    principal: Principal
    token_id: str  # the login session's token id (the token itself is not kept)
    expires_at: float


class TechnicianDesk:
    """Log technicians in and out on one handheld (`device`: its name in the audit trail)."""

    def __init__(self, store: AccessStore, audit: AuditTrail, device: str) -> None:
        self.store = store
        self.audit = audit
        self.via = f"handheld:{device}"

    def login(self, name: str, password: str, now: float) -> TechnicianSession:
        """LoginRefused (audited) on a wrong name or password, a disabled or locked user."""
        try:
            principal, issued = self.store.login(name, password, now)
        except LoginRefused as exc:
            try:
                who = check_name(name)
            except AccessError:  # not a well-formed name: not written to the trail
                who = "?"
            self.audit.record(now, who, "login", via=self.via, outcome="failed",
                              detail=exc.message)  # fmt: skip
            raise
        self.audit.record(now, name, "login", via=self.via)
        return TechnicianSession(principal, issued.token_id, issued.expires_at)

    def logout(self, session: TechnicianSession, now: float) -> None:
        self.store.revoke_token(session.token_id)
        self.audit.record(now, session.principal.name, "logout", via=self.via)

    def record(
        self, session: TechnicianSession, action: str, target: str, outcome: str, now: float
    ) -> None:
        """An operation the technician did or was refused, in the trail."""
        self.audit.record(now, session.principal.name, action, via=self.via, target=target,
                          outcome=outcome)  # fmt: skip
