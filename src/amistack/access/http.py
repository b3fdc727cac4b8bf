"""Access control for HTTP APIs (FastAPI): who is calling, may they, and the audit entry.

`AccessControl.require(right)` is a FastAPI dependency: it authenticates the request by

1. a bearer token (`Authorization: Bearer ...`, RFC 6750), an API token or a login session's;
2. the login session cookie (`amistack_session`, HttpOnly, SameSite=Strict) for browsers;
3. a TLS client certificate from the project's PKI whose IECUserRoles extension carries the
   roles (IEC 62351-8), read from the ASGI TLS extension (`scope["extensions"]["tls"]`); the TLS
   handshake verified it against the CA, this checks the CRL and that the user is not disabled;

then answers 401 (`AccessDenied`, no credentials or bad ones; `WWW-Authenticate: Bearer`) or
403 (authenticated, but no role grants the right; audited).

A field handheld acts for the technician logged in on it (docs/handheld.md): its requests carry
`X-Amistack-Technician: NAME` and `X-Amistack-Technician-Roles: ROLE,...`, and the request is
then the technician's (`on_behalf`): audited as NAME via `handheld:<the handheld's user>`, with
the technician's roles. Only a token issued as a handheld's (`amistack users token NAME
--handheld`, kind `handheld`) may assert a technician, and only roles whose rights the
handheld's own roles hold; anything else is refused (403, audited under the caller).

The OpenAPI document declares the bearer and cookie schemes (FastAPI's security classes) and
`mutualTLS` (added by the app).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from cryptography import x509
from fastapi import Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from amistack.access.audit import AuditTrail
from amistack.access.certroles import CertRolesError, principal_from_certificate
from amistack.access.rights import Right, Role, parse_roles, rights_of, role_names
from amistack.access.users import HANDHELD_TOKEN, AccessError, AccessStore, Principal, check_name
from amistack.keymgmt.pki import PkiError, load_revoked_serials

log = logging.getLogger(__name__)

SESSION_COOKIE = "amistack_session"
TECHNICIAN_HEADER = "X-Amistack-Technician"  # whom a handheld acts for
TECHNICIAN_ROLES_HEADER = "X-Amistack-Technician-Roles"  # their roles, comma-separated

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="an API token (`amistack users token NAME`) or a login session's token "
    "(POST /auth/login)",
)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="the login session cookie set by POST /auth/login",
)
MUTUAL_TLS_SCHEME = {
    "type": "mutualTLS",
    "description": "a client certificate from the project's PKI carrying IEC 62351-8 roles "
    "(`amistack pki issue-client NAME --role OPERATOR`)",
}


class AccessDenied(Exception):
    """401 (`unauthenticated`) or 403 (`forbidden`); the API answers {"error", "detail"}."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class AccessControl:
    """Identities (the `AccessStore`), the audit trail and, with TLS, the CA's CRL."""

    def __init__(
        self,
        store: AccessStore,
        audit: AuditTrail,
        clock: Callable[[], float],
        *,
        ca_cert: x509.Certificate | None = None,
        crl_path: Path | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self.ca_cert = ca_cert
        self.crl_path = crl_path
        self.route_rights: dict[tuple[str, str], Right | None] = {}

    # -- authentication ------------------------------------------------------------------------

    def authenticate(
        self, request: Request, bearer: str | None, cookie: str | None
    ) -> Principal | None:
        now = self.clock()
        for token in (bearer, cookie):
            if token:
                principal = self.store.authenticate_token(token, now)
                if principal is None:
                    raise AccessDenied(401, "unauthenticated", "invalid or expired token")
                return principal
        return self._certificate(request)

    def _certificate(self, request: Request) -> Principal | None:
        tls = request.scope.get("extensions", {}).get("tls") or {}
        chain = tls.get("client_cert_chain") or []
        if not chain:
            return None
        try:
            cert = x509.load_pem_x509_certificate(str(chain[0]).encode())
            principal = principal_from_certificate(cert)
        except (ValueError, CertRolesError) as exc:
            raise AccessDenied(401, "unauthenticated", f"client certificate: {exc}") from None
        if self.ca_cert is not None and self.crl_path is not None:
            try:
                revoked = cert.serial_number in load_revoked_serials(self.crl_path, self.ca_cert)
            except PkiError as exc:  # fail closed
                log.warning("API: CRL unusable: %s", exc)
                raise AccessDenied(
                    401, "unauthenticated", "revocation status unavailable"
                ) from None
            if revoked:
                raise AccessDenied(401, "unauthenticated", "the client certificate is revoked")
        user = self.store.get_user(principal.name)
        if user is not None and user.disabled:
            raise AccessDenied(401, "unauthenticated", f"user {principal.name!r} is disabled")
        return principal

    # -- authorisation -------------------------------------------------------------------------

    def require(self, right: Right | None) -> Callable[..., Principal]:
        """A dependency admitting principals whose roles grant `right` (None: any principal)."""

        def dependency(
            request: Request,
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
            cookie: Annotated[str | None, Security(cookie_scheme)],
        ) -> Principal:
            principal = self.authenticate(
                request, bearer.credentials if bearer is not None else None, cookie
            )
            if principal is None:
                raise AccessDenied(401, "unauthenticated", "credentials required")
            principal = dataclasses.replace(principal, source=client_address(request))
            if TECHNICIAN_HEADER in request.headers:
                principal = self.on_behalf(principal, request)
            if right is not None and not principal.may(right):
                self.deny(
                    principal,
                    request,
                    {"right": right.value, "roles": role_names(principal.roles)},
                    f"{right.value!r} is needed; {principal.name} holds "
                    f"{', '.join(role_names(principal.roles)) or 'no role'}",
                )
            meter = request.path_params.get("meter_id")
            if isinstance(meter, str):
                self.check_scope(principal, meter, request)
            request.state.principal = principal
            return principal

        dependency.required_right = right  # type: ignore[attr-defined]
        return dependency

    def on_behalf(self, handheld: Principal, request: Request) -> Principal:
        """The technician a handheld's request names (module docstring), or 403 (audited)."""
        name = request.headers.get(TECHNICIAN_HEADER, "")
        detail: dict[str, Any] = {"technician": name[:64]}
        if handheld.via != HANDHELD_TOKEN:
            why = f"{handheld.name} is no handheld: it may not act for a technician"
            self.deny(handheld, request, detail, why)
        roles: frozenset[Role] = frozenset()
        try:
            check_name(name)
            roles = parse_roles([request.headers.get(TECHNICIAN_ROLES_HEADER, "")[:256]])
        except (AccessError, ValueError) as exc:
            self.deny(handheld, request, detail, f"technician: {exc}")
        excess = rights_of(roles) - handheld.rights
        if excess:
            detail["roles"] = role_names(roles)
            why = f"the technician's roles exceed the handheld's ({', '.join(sorted(excess))})"
            self.deny(handheld, request, detail, why)
        via = f"{HANDHELD_TOKEN}:{handheld.name}"
        return dataclasses.replace(handheld, name=name, roles=roles, via=via)

    def check_scope(self, principal: Principal, meter: str, request: Request) -> None:
        """403 (audited) unless `meter` lies in the principal's area of responsibility (a role
        certificate's IECUserRoles aor; users and tokens are unscoped)."""
        if not principal.covers(meter):
            self.deny(
                principal,
                request,
                {"meter": meter, "aor": sorted(principal.aor)},
                f"meter {meter!r} is outside {principal.name}'s area of responsibility",
            )

    def deny(
        self, principal: Principal, request: Request, detail: dict[str, Any], why: str
    ) -> None:
        """Refuse with 403, audited as `access.denied` (a refusal stands even if the trail
        cannot be written: that is logged)."""
        self.try_record(
            principal,
            "access.denied",
            target=f"{request.method} {request.url.path}",
            outcome="denied",
            detail=detail,
        )
        raise AccessDenied(403, "forbidden", why)

    # -- audit ---------------------------------------------------------------------------------

    def try_record(self, who: Principal | str, action: str, **fields: Any) -> bool:
        """`record`, logging instead of raising when the trail cannot be written: for entries
        that follow what already happened (an outcome) or did not (a refusal)."""
        try:
            self.record(who, action, **fields)
        except Exception:
            log.exception("operator audit entry lost", extra={"action": action})
            return False
        return True

    def record(
        self,
        who: Principal | str,
        action: str,
        *,
        target: str = "",
        outcome: str = "ok",
        detail: dict[str, Any] | str = "",
        source: str = "",
    ) -> int:
        if isinstance(who, Principal):
            return self.audit.record_by(
                self.clock(), who, action, target=target, outcome=outcome, detail=detail
            )
        return self.audit.record(
            self.clock(), who, action, target=target, outcome=outcome, detail=detail, source=source
        )


def client_address(request: Request) -> str:
    """The peer's address as the server saw it (no X-Forwarded-For: nothing here trusts a
    proxy's header)."""
    return request.client.host if request.client is not None else ""
