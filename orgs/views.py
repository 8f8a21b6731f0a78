"""Organisation pages: onboarding, overview, members and invitations, settings.

Every page under /o/<org_slug>/ is built on `orgs.tenancy.OrgMixin` and declares its
`required_role`; finer rules (who may change whose role, the last owner) live in
`orgs.services` / `orgs.roles` and come back here as `OrgError` messages.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from accounts.models import User
from apikeys.selectors import apikey_counts, usage_totals, usage_window
from config import pager
from config.confirm import Confirmation, ConfirmMixin
from config.text import end_sentence
from orgs import roles, selectors, services
from orgs.actors import Actor
from orgs.forms import (
    AuditFilterForm,
    DeleteOrgForm,
    InviteForm,
    OrgCreateForm,
    RoleForm,
    SettingsForm,
    TransferOwnershipForm,
    TransferToForm,
)
from orgs.models import ROLE_RANK, AuditEvent, InvitationStatus, Membership, Role
from orgs.services import OrgError, audit_record
from orgs.tenancy import OrgMixin, OrgView


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _members_url(slug: str) -> str:
    return f"/o/{slug}/members/"


# --- Onboarding and switching ------------------------------------------------------------


class OrgCreateView(LoginRequiredMixin, View):
    """Create an organisation; its creator becomes the owner."""

    template_name = "orgs/org_create.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, OrgCreateForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = OrgCreateForm(request.POST)
        if not form.is_valid():
            return self._render(request, form)
        name = form.cleaned_data["name"]
        slug = form.cleaned_data["slug"] or selectors.org_slug_suggest(name=name)
        try:
            org = services.org_create(name=name, slug=slug, owner=_user(request), request=request)
        except OrgError as error:
            field = "slug" if error.code.startswith("slug") else "name"
            form.add_error(field, error.message)
            return self._render(request, form)
        messages.success(request, f"{org.name} is ready. You are its owner.")
        return redirect(f"/o/{org.slug}/")

    def _render(self, request: HttpRequest, form: OrgCreateForm) -> HttpResponse:
        has_orgs = selectors.membership_first_for_user(user=_user(request)) is not None
        return render(request, self.template_name, {"form": form, "has_orgs": has_orgs})


NEW_ORG_CHOICE = "+new"  # not a valid slug, so it never names an org


class OrgSwitchView(LoginRequiredMixin, View):
    """The shell's org switcher submits here (GET ?org=<slug>); the org page itself
    checks membership, so an unknown slug ends in the usual 404."""

    def get(self, request: HttpRequest) -> HttpResponse:
        slug = request.GET.get("org", "")
        if slug == NEW_ORG_CHOICE:
            return redirect("org_create")
        try:
            slug = services.clean_slug(slug)
        except OrgError:
            return redirect("home")
        return redirect(f"/o/{slug}/")


# --- Invitations (the link in the email) -------------------------------------------------


@method_decorator(never_cache, name="dispatch")
class InvitationView(View):
    """The page an invitation email links to. The token is in the URL, so the page is never
    cached and its links send only the origin as referrer, never the path (ADR 0022:
    `strict-origin` rather than `no-referrer`, under which Chromium sends `Origin: null`
    with the accept form's POST and CSRF protection rightly refuses it)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = super().dispatch(request, *args, **kwargs)
        response["Referrer-Policy"] = "strict-origin"
        return response

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        invitation = selectors.invitation_get_by_token(token=token)
        if invitation is None or not invitation.is_usable:
            return _invitation_invalid(request, invitation.status if invitation else None)
        context: dict[str, Any] = {
            "invitation": invitation,
            "role_label": Role(invitation.role).label,
        }
        if not request.user.is_authenticated:
            # After sign-in the invitee comes back by the invitation's id, not its token: the
            # `next` URL is stored with the sign-in link, and tokens are only ever stored
            # hashed. Proving the email (the sign-in itself) is what accepting requires.
            context["login_url"] = "/login/?" + urlencode(
                {"next": _invitee_path(invitation), "email": invitation.email}
            )
            return render(request, "orgs/invitation_signin.html", context)
        user = _user(request)
        if user.email != invitation.email:
            return render(request, "orgs/invitation_not_yours.html", context, status=403)
        return render(request, "orgs/invitation_accept.html", context)

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect(f"/invitations/{token}/")
        try:
            membership = services.invitation_accept(
                token=token, user=_user(request), request=request
            )
        except services.InvitationError as error:
            if error.code == "invitation_not_yours":
                invitation = selectors.invitation_get_by_token(token=token)
                context = {
                    "invitation": invitation,
                    "role_label": Role(invitation.role).label if invitation else "",
                }
                return render(request, "orgs/invitation_not_yours.html", context, status=403)
            return _invitation_invalid(request, None)
        messages.success(
            request,
            f"Welcome to {end_sentence(membership.org.name)} "
            f"You joined as {Role(membership.role).label}.",
        )
        return redirect(f"/o/{membership.org.slug}/")


def _invitation_invalid(request: HttpRequest, status: str | None) -> HttpResponse:
    return render(
        request,
        "orgs/invitation_invalid.html",
        {"status": status, "statuses": InvitationStatus},
        status=404,
    )


def _invitee_path(invitation: Any) -> str:
    return f"/invitations/id/{invitation.public_id}/"


class InvitationForInviteeView(LoginRequiredMixin, View):
    """The invitation, by id, for the signed-in owner of its email (where sign-in from the
    invitation page returns to). Anyone else gets the same 404 as for no invitation."""

    def _invitation(self, request: HttpRequest, invitation_id: str) -> Any:
        invitation = selectors.invitation_get_for_invitee(
            public_id=invitation_id, user=_user(request)
        )
        if invitation is None:
            raise Http404("No such invitation.")
        return invitation

    def get(self, request: HttpRequest, invitation_id: str) -> HttpResponse:
        invitation = self._invitation(request, invitation_id)
        if not invitation.is_usable:
            return _invitation_invalid(request, invitation.status)
        context = {"invitation": invitation, "role_label": Role(invitation.role).label}
        return render(request, "orgs/invitation_accept.html", context)

    def post(self, request: HttpRequest, invitation_id: str) -> HttpResponse:
        invitation = self._invitation(request, invitation_id)
        try:
            membership = services.invitation_accept(
                invitation=invitation, user=_user(request), request=request
            )
        except services.InvitationError:
            return _invitation_invalid(request, None)
        messages.success(
            request,
            f"Welcome to {end_sentence(membership.org.name)} "
            f"You joined as {Role(membership.role).label}.",
        )
        return redirect(f"/o/{membership.org.slug}/")


# --- Overview ------------------------------------------------------------------------------


class OrgOverviewView(OrgView):
    required_role = Role.MEMBER
    template_name = "orgs/org_overview.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["counts"] = selectors.membership_counts(org=self.org)
        context["key_counts"] = apikey_counts(org=self.org)
        day = usage_window("24h", now=timezone.now())
        context["requests_24h"] = usage_totals(org=self.org, since=day.since, until=day.until)
        context["limits"] = self.org.limits
        context["events"] = selectors.audit_event_list_recent(org=self.org, limit=10)
        if self.membership.has_role(Role.ADMIN):
            context["pending_invitations"] = selectors.invitation_count_pending(org=self.org)
        return context


# --- Members ---------------------------------------------------------------------------------


class MembersView(OrgView):
    """Everyone sees the member list; admins and owners also see the invite form, the
    pending invitations and the controls their role allows."""

    required_role = Role.MEMBER
    template_name = "orgs/members_list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        me = self.membership
        assignable = roles.assignable_roles(me) if roles.can_manage_members(me) else []
        rows = []
        for membership in selectors.membership_list(org=self.org):
            manageable = roles.can_manage(me, membership)
            rows.append(
                {
                    "membership": membership,
                    "is_you": membership.pk == me.pk,
                    "can_manage": manageable,
                    "role_choices": [(r, Role(r).label) for r in assignable] if manageable else [],
                }
            )
        context["rows"] = rows
        if assignable:
            context["invite_form"] = kwargs.get("invite_form") or InviteForm(roles=assignable)
            context["invitations"] = [
                {
                    "invitation": invitation,
                    "expired": invitation.status == InvitationStatus.EXPIRED,
                    "can_manage": roles.can_assign(me, invitation.role),
                }
                for invitation in selectors.invitation_list_pending(org=self.org)
            ]
        return context


class MemberInviteView(OrgView):
    """The invite form on its own page (also where an invalid invite is shown again)."""

    required_role = Role.ADMIN
    template_name = "orgs/member_invite.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.setdefault("form", InviteForm(roles=roles.assignable_roles(self.membership)))
        return context

    def post(self, request: HttpRequest) -> HttpResponse:
        form = InviteForm(request.POST, roles=roles.assignable_roles(self.membership))
        if form.is_valid():
            try:
                invitation = services.member_invite(
                    org=self.org,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    actor=Actor.signed_in(request),
                    request=request,
                )
            except OrgError as error:
                form.add_error("email", error.message)
            else:
                messages.success(
                    request,
                    f"Invitation sent to {invitation.email}. It expires in 7 days.",
                )
                return redirect(_members_url(self.org.slug))
        return self.render_to_response(self.get_context_data(form=form), status=400)


ROLE_POWERS = {
    Role.OWNER: (
        "every power in {org}: API keys, members, KYC, settings, other owners' and admins' "
        "roles, ownership transfer and deleting the organisation"
    ),
    Role.ADMIN: "API keys, members (not owners or other admins), KYC and settings of {org}",
    Role.MEMBER: "read-only access to {org}: masked keys, usage and members",
}


def _with_article(label: str) -> str:
    return f"{'an' if label[:1].lower() in 'aeiou' else 'a'} {label.lower()}"


class MemberActionView(ConfirmMixin, OrgMixin, View):
    """Base for the actions on one member, looked up inside this org only; each asks
    first (config.confirm)."""

    required_role = Role.ADMIN

    def get_target(self, member_id: str) -> Membership:
        return selectors.membership_get(org=self.org, public_id=member_id)

    def target(self) -> Membership:
        if not hasattr(self, "_target"):
            self._target = self.get_target(self.kwargs["member_id"])
        return self._target

    def members_url(self) -> str:
        return _members_url(self.org.slug)


class MemberRoleView(MemberActionView):
    """The members table's "Make owner / admin / member" buttons ask here first; the
    confirm step says what the new role allows and to whom."""

    form_class = RoleForm

    def get_confirm_form(self, data: QueryDict | None) -> forms.Form | None:
        form = RoleForm(data)
        form.fields["role"].widget = forms.HiddenInput()
        return form

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        target = self.target()
        email = target.user.email
        valid = form is not None and form.is_valid()
        role = form.cleaned_data["role"] if form is not None and valid else ""
        blocked = ""
        if not roles.can_manage(self.membership, target):
            blocked = (
                "You cannot change your own role; ask another owner, or transfer ownership."
                if target.pk == self.membership.pk
                else "Your role does not allow changing this member's role."
            )
        elif not role:
            blocked = "Choose the role from the members list."
        elif not roles.can_assign(self.membership, role):
            blocked = "Your role does not allow giving this role."
        elif role == target.role:
            blocked = f"{email} is already {_with_article(Role(role).label)}."
        label = Role(role).label if role else "another role"
        org_name = self.org.name
        details = [f"Today they are {_with_article(Role(target.role).label)}."]
        if role == Role.OWNER:
            details.append("Only an owner can change an owner's role back.")
        return Confirmation(
            title=f"Make {email} {_with_article(label) if role else label}?",
            subject=email,
            subject_label="Member",
            what=(
                f"They get {ROLE_POWERS[Role(role)].format(org=org_name)}."
                if role
                else "Their role changes."
            ),
            details=details,
            confirm_label=f"Make {label.lower()}",
            button_id="confirm-role",
            danger=role == Role.OWNER or ROLE_RANK.get(role, 0) < ROLE_RANK[target.role],
            cancel_url=self.members_url(),
            blocked=blocked,
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        assert form is not None
        target = self.target()
        try:
            services.membership_change_role(
                membership=target,
                role=form.cleaned_data["role"],
                actor=Actor.signed_in(self.request),
                request=self.request,
            )
        except OrgError as error:
            messages.error(self.request, error.message)
        else:
            messages.success(
                self.request, f"{target.user.email} is now {Role(target.role).label.lower()}."
            )
        return redirect(self.members_url())


class MemberRemoveView(MemberActionView):
    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        target = self.target()
        return Confirmation(
            title=f"Remove {target.user.email}?",
            subject=target.user.email,
            subject_label=Role(target.role).label,
            what=(
                f"They lose access to {self.org.name} at once: its dashboard, API keys and "
                "audit log."
            ),
            details=["API keys they created keep working until revoked."],
            confirm_label="Remove member",
            button_id="confirm-remove",
            cancel_url=self.members_url(),
            blocked=""
            if roles.can_manage(self.membership, target)
            else f"Your role does not allow removing this member ({target.get_role_display()}).",
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        target = self.target()
        try:
            services.membership_remove(
                membership=target, actor=Actor.signed_in(self.request), request=self.request
            )
        except OrgError as error:
            messages.error(self.request, error.message)
        else:
            messages.success(self.request, f"{target.user.email} was removed.")
        return redirect(self.members_url())


class MemberLeaveView(ConfirmMixin, OrgMixin, View):
    required_role = Role.MEMBER

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        last_owner = (
            self.membership.role == Role.OWNER
            and selectors.membership_counts(org=self.org)["owners"] <= 1
        )
        return Confirmation(
            title=f"Leave {self.org.name}?",
            subject=_user(self.request).email,
            subject_label="You",
            what="You lose access to this organisation until someone invites you again.",
            confirm_label="Leave organisation",
            button_id="confirm-leave",
            cancel_url=_members_url(self.org.slug),
            blocked="You are the last owner. Transfer ownership to another member or delete "
            "the organisation in settings first."
            if last_owner
            else "",
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        try:
            services.membership_leave(membership=self.membership, request=self.request)
        except OrgError as error:
            messages.error(self.request, error.message)
            return redirect(_members_url(self.org.slug))
        messages.success(self.request, f"You left {end_sentence(self.org.name)}")
        return redirect("home")


class InvitationActionView(OrgMixin, View):
    required_role = Role.ADMIN
    http_method_names = ["post"]

    def post(self, request: HttpRequest, invitation_id: str) -> HttpResponse:
        invitation = selectors.invitation_get(org=self.org, public_id=invitation_id)
        try:
            self.act(request, invitation)
        except OrgError as error:
            messages.error(request, error.message)
        return redirect(_members_url(self.org.slug))

    def act(self, request: HttpRequest, invitation: Any) -> None:
        raise NotImplementedError


class InvitationResendView(InvitationActionView):
    def act(self, request: HttpRequest, invitation: Any) -> None:
        services.invitation_resend(
            invitation=invitation, actor=Actor.signed_in(request), request=request
        )
        messages.success(request, f"Invitation sent again to {invitation.email}.")


class InvitationCancelView(InvitationActionView):
    def act(self, request: HttpRequest, invitation: Any) -> None:
        services.invitation_cancel(
            invitation=invitation, actor=Actor.signed_in(request), request=request
        )
        messages.success(request, f"Invitation to {invitation.email} cancelled.")


# --- Settings ----------------------------------------------------------------------------


class SettingsView(OrgView):
    required_role = Role.ADMIN
    template_name = "orgs/org_settings.html"

    def _settings_form(self, data: Any = None) -> SettingsForm:
        return SettingsForm(
            data,
            initial={
                "name": self.org.name,
                "slug": self.org.slug,
                "require_two_factor": self.org.require_two_factor,
                "leak_response": self.org.leak_response,
            },
            can_change_two_factor=roles.can_change_two_factor_policy(self.membership),
            # Both are security policies the service leaves to owners.
            can_change_leak_response=roles.can_change_two_factor_policy(self.membership),
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.setdefault("form", self._settings_form())
        if self.membership.role == Role.OWNER:
            candidates = [
                (m.public_id, f"{m.user.email} ({Role(m.role).label})")
                for m in selectors.membership_list(org=self.org)
                if m.role != Role.OWNER
            ]
            context.setdefault("transfer_form", TransferOwnershipForm(candidates=candidates))
            context.setdefault("delete_form", DeleteOrgForm())
        return context

    def post(self, request: HttpRequest) -> HttpResponse:
        form = self._settings_form(request.POST)
        if form.is_valid():
            try:
                org = services.org_update_settings(
                    org=self.org,
                    name=form.cleaned_data["name"],
                    slug=form.cleaned_data["slug"],
                    require_two_factor=form.cleaned_data["require_two_factor"],
                    leak_response=form.cleaned_data["leak_response"],
                    actor=Actor.signed_in(request),
                    request=request,
                )
            except OrgError as error:
                field = "slug" if error.code.startswith("slug") else None
                form.add_error(field, error.message)
            else:
                messages.success(request, "Settings saved.")
                return redirect(f"/o/{org.slug}/settings/")
        # The org object may carry rejected values; show the saved ones in the shell.
        self.org.refresh_from_db()
        return self.render_to_response(self.get_context_data(form=form), status=400)


class OwnershipTransferView(ConfirmMixin, OrgMixin, View):
    """Settings' "Transfer ownership" asks here first: the confirm step names the new
    owner and says the acting owner becomes an admin."""

    required_role = Role.OWNER

    form_class = TransferToForm

    def settings_url(self) -> str:
        return f"/o/{self.org.slug}/settings/"

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        target = self._target(form)
        if target is not None:
            assert form is not None
            form.fields["membership"].widget = forms.HiddenInput()
        return Confirmation(
            title=f"Transfer ownership of {self.org.name}"
            + (f" to {target.user.email}?" if target else "?"),
            subject=target.user.email if target else "",
            subject_label="New owner",
            what=(
                f"{target.user.email if target else 'The member you choose'} becomes an owner, "
                "with every power including deleting the organisation. You become an admin "
                "and cannot undo this yourself."
            ),
            confirm_label="Transfer ownership",
            button_id="confirm-transfer",
            cancel_url=self.settings_url(),
        )

    def _target(self, form: forms.Form | None) -> Membership | None:
        if form is None or not form.is_bound or not form.is_valid():
            return None
        return selectors.membership_get(org=self.org, public_id=form.cleaned_data["membership"])

    def perform(self, form: forms.Form | None) -> HttpResponse:
        target = self._target(form)
        assert target is not None
        try:
            services.ownership_transfer(
                org=self.org,
                to_membership=target,
                actor=Actor.signed_in(self.request),
                request=self.request,
            )
        except OrgError as error:
            messages.error(self.request, error.message)
        else:
            messages.success(
                self.request, f"{target.user.email} is now the owner. You are now an admin."
            )
        return redirect(self.settings_url())


class OrgDeleteView(OrgMixin, View):
    required_role = Role.OWNER
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        form = DeleteOrgForm(request.POST)
        confirm = form.cleaned_data["confirm_slug"] if form.is_valid() else ""
        name = self.org.name
        try:
            services.org_delete(
                org=self.org,
                actor=Actor.signed_in(request),
                confirm_slug=confirm,
                request=request,
            )
        except OrgError as error:
            messages.error(request, error.message)
            return redirect(f"/o/{self.org.slug}/settings/")
        messages.success(request, f"{name} was deleted.")
        return redirect("home")


# --- Audit log ---------------------------------------------------------------------------

# Longest details summary shown in a table cell; the full details are one click away.
DETAILS_SUMMARY_LENGTH = 140


def _details_parts(details: dict[str, Any]) -> Iterator[str]:
    # Sorted: PostgreSQL's jsonb does not keep insertion order, so this is the one stable
    # order on every database.
    for key, value in sorted(details.items()):
        if isinstance(value, dict) and set(value) == {"from", "to"}:
            yield f"{key}: {value['from']} → {value['to']}"
        elif isinstance(value, dict):
            # Containers such as `changes` read better without their own name.
            yield from _details_parts(value)
        elif isinstance(value, list):
            yield f"{key}: {', '.join(str(item) for item in value) or 'none'}"
        elif value is None or value == "":
            yield f"{key}: —"
        else:
            yield f"{key}: {value}"


def details_summary(details: dict[str, Any]) -> str:
    """A one-line reading of an event's details, for the table."""
    text = " · ".join(_details_parts(details))
    if len(text) > DETAILS_SUMMARY_LENGTH:
        text = text[: DETAILS_SUMMARY_LENGTH - 1].rstrip() + "…"
    return text


class AuditLogView(OrgView):
    """The org's audit log: filters in a GET form, keyset pages of newest-first events and
    an export of the same selection as CSV. Admins and owners only (ADR 0024): events carry
    every member's IP address and user agent."""

    required_role = Role.ADMIN
    template_name = "orgs/audit_list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        params = self.request.GET
        form = AuditFilterForm(params)
        valid = form.is_valid()
        query = form.query() if valid else {}
        before, after = pager.cursors(params, prefix="evt")
        page = (
            selectors.audit_event_page(org=self.org, before=before, after=after, **form.filters())
            if valid
            else selectors.AuditPage.empty()
        )
        actions = selectors.audit_action_list(org=self.org)
        selected_action = str(params.get("action", ""))
        if selected_action and selected_action not in actions:
            actions.append(selected_action)
        base = f"/o/{self.org.slug}/audit/"
        context.update(
            form=form,
            filtered=bool(query),
            actions=actions,
            selected_action=selected_action,
            rows=[
                {
                    "event": event,
                    "summary": details_summary(event.details),
                    "details_json": json.dumps(
                        event.details, indent=2, ensure_ascii=False, sort_keys=True
                    ),
                }
                for event in page.items
            ],
            **pager.links(base, query, page, paged=bool(before or after)),
            clear_url=base,
            export_url=pager.page_url(base + "export.csv", query),
        )
        return context


CSV_HEADER = [
    "time_utc",
    "id",
    "action",
    "actor_type",
    "actor",
    "actor_id",
    "external_actor_id",
    "target_type",
    "target_id",
    "target",
    "ip",
    "user_agent",
    "request_id",
    "details",
]
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
EXPORT_CHUNK_SIZE = 1000


def csv_safe(value: str) -> str:
    """The cell as text a spreadsheet will not evaluate: a leading quote disarms it."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def audit_csv_row(event: AuditEvent) -> list[str]:
    time_utc = event.created_at.astimezone(UTC).isoformat(timespec="milliseconds")
    cells = [
        time_utc.replace("+00:00", "Z"),
        event.public_id,
        event.action,
        event.actor_type,
        event.actor_label,
        event.actor_id,
        event.external_actor_id,
        event.target_type,
        event.target_id,
        event.target_label,
        event.ip or "",
        event.user_agent,
        event.request_id,
        json.dumps(event.details, sort_keys=True, ensure_ascii=False) if event.details else "",
    ]
    return [csv_safe(cell) for cell in cells]


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a stream."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    for event in events:
        yield writer.writerow(audit_csv_row(event))


class AuditExportView(OrgMixin, View):
    """The audit log's events under the page's filters as CSV, streamed row by row so a
    large log never sits in memory. The export is itself recorded (`audit_log.exported`)."""

    required_role = Role.ADMIN
    http_method_names = ["get"]

    def get(self, request: HttpRequest) -> HttpResponseBase:
        form = AuditFilterForm(request.GET)
        if not form.is_valid():
            errors = "; ".join(
                f"{name}: {' '.join(str(problem) for problem in problems)}"
                for name, problems in form.errors.items()
            )
            return HttpResponse(
                f"Invalid filters: {errors}\n", status=400, content_type="text/plain"
            )
        audit_record(
            action="audit_log.exported",
            org=self.org,
            request=request,
            details={"filters": form.query()},
        )
        events = selectors.audit_event_list(org=self.org, **form.filters())
        response = StreamingHttpResponse(
            _csv_lines(events.iterator(chunk_size=EXPORT_CHUNK_SIZE)),
            content_type="text/csv; charset=utf-8",
        )
        stamp = timezone.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = (
            f'attachment; filename="audit-{self.org.slug}-{stamp}.csv"'
        )
        response["Cache-Control"] = "no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response
