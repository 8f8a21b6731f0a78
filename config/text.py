"""Words the dashboard shows people: audit events as sentences, sentences that end once.

The event codes (`api_key.created`) stay the stable identifiers of the audit log, its
filters, the CSV export and the API; pages show the sentence and keep the code in a
`title` attribute or a column (ADR 0081).
"""

from __future__ import annotations

from typing import Any

SENTENCE_ENDS = (".", "!", "?", "…")

# One short phrase per audit action, written to follow an actor column ("alice@…").
EVENT_SENTENCES: dict[str, str] = {
    "api_key.created": "Created an API key",
    "api_key.deleted": "Deleted an API key",
    "api_key.ip_not_allowed": "Used an API key from outside its IP allowlist",
    "api_key.leaked": "Reported an API key leaked",
    "api_key.revoked": "Revoked an API key",
    "api_key.rotated": "Rotated an API key",
    "api_key.updated": "Edited an API key",
    "audit_log.exported": "Exported the audit log",
    "invitation.accepted": "Accepted an invitation",
    "invitation.cancelled": "Cancelled an invitation",
    "invitation.resent": "Resent an invitation",
    "kyc.approved": "Approved the KYC application",
    "kyc.document_viewed": "Downloaded a KYC document",
    "kyc.rejected": "Rejected the KYC application",
    "kyc.submitted": "Submitted the KYC application",
    "member.invited": "Invited a member",
    "member.left": "Left the organisation",
    "member.removed": "Removed a member",
    "member.role_changed": "Changed a member's role",
    "org.created": "Created the organisation",
    "org.deleted": "Deleted the organisation",
    "org.limits_changed": "Changed the API limits",
    "org.ownership_transferred": "Transferred ownership",
    "org.plan_changed": "Changed the plan",
    "org.reactivated": "Reactivated the organisation",
    "org.settings_changed": "Changed the settings",
    "org.suspended": "Suspended the organisation",
    "platform.org_created": "Created an organisation for a customer",
    "platform.role_granted": "Granted a platform role",
    "platform.role_revoked": "Revoked a platform role",
    "sign_in_link.created": "Issued a sign-in link",
    "system_key.created": "Created a system key",
    "system_key.revoked": "Revoked a system key",
    "user.magic_link_requested": "Asked for a sign-in link",
    "user.other_sessions_signed_out": "Signed out other sessions",
    "user.passkey_added": "Added a passkey",
    "user.passkey_removed": "Removed a passkey",
    "user.platform_role_changed": "Platform role changed",
    "user.recovery_code_used": "Signed in with a recovery code",
    "user.recovery_codes_generated": "Generated new recovery codes",
    "user.second_factor_failed": "Failed a second-factor check",
    "user.session_signed_out": "Signed out a session",
    "user.signed_in": "Signed in",
    "user.signed_out": "Signed out",
    "user.signed_up": "Signed up",
    "user.totp_disabled": "Turned off the authenticator app",
    "user.totp_enabled": "Turned on the authenticator app",
}


def event_sentence(action: str) -> str:
    """The phrase for an audit action; an action without one reads from its code
    (`webhook.endpoint_added` → "Webhook: endpoint added")."""
    known = EVENT_SENTENCES.get(action)
    if known:
        return known
    subject, _, verb = action.partition(".")
    subject_words = subject.replace("_", " ").strip().capitalize() or "Event"
    return f"{subject_words}: {verb.replace('_', ' ')}" if verb else subject_words


def end_sentence(text: Any) -> str:
    """`text` ending with one full stop: "Demo Inc." stays "Demo Inc.", not "Demo Inc..",
    and "Acme" becomes "Acme."."""
    value = str(text).rstrip()
    return value if value.endswith(SENTENCE_ENDS) else f"{value}."
