"""The secure module sits below the meter, the event log and the audit trail: importing the
generic event log (or the audit trail built on it) must not pull in the meter."""

from __future__ import annotations

import subprocess
import sys


def test_the_event_log_and_audit_trail_do_not_import_the_meter() -> None:
    probe = (
        "import sys, amistack.eventlog, amistack.eventlog.verify, amistack.access.audit, "
        "amistack.securemodule\n"
        "print(sorted(m for m in sys.modules if m.startswith('amistack.meter')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
