"""The org-side KYC page and the platform console.

Org pages are built on `orgs.tenancy.OrgMixin`. Console pages are built on
`PlatformMixin`, which answers 404 to anyone who is not platform staff, sends staff whose
session has not passed a second factor to enrol or verify one (defence in depth behind the
accounts middleware), and 403s platform admins on owner-only pages.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    QueryDict,
)
from django.shortcuts import redirect, render
from django.utils.cache import patch_cache_control
from django.views import View

from accounts.models import PlatformRole, User
from accounts.selectors import user_get_by_email, user_has_second_factor
from apikeys.forms import scope_grid
from config.confirm import Confirmation, ConfirmMixin
from config.errors import InvalidFields
from config.text import end_sentence
from orgs.actors import Actor
from orgs.models import KycStatus, OrgStatus
from orgs.plans import PLAN_LIMITS
from orgs.tenancy import OrgMixin, OrgView
from platform_admin import selectors, services
from platform_admin.documents import human_size, max_bytes, max_documents
from platform_admin.forms import (
    GrantAdminForm,
    KycForm,
    LimitsForm,
    OrgSearchForm,
    PlanForm,
    RejectForm,
    RevokeRoleForm,
    SuspendForm,
    SystemKeyForm,
)
from platform_admin.models import KycApplication, KycApplicationStatus, KycDocument
from platform_admin.services import PlatformError

logger = logging.getLogger(__name__)

SECURITY_URL = "/account/security/"
VERIFY_URL = "/login/2fa/"
ORGS_PER_PAGE = 50


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def document_response(document: KycDocument) -> FileResponse:
    """Stream a private document as a download that no browser renders or caches."""
    try:
        handle = document.file.storage.open(document.file.name, "rb")
    except FileNotFoundError:
        logger.error("KYC document %s is missing from private storage", document.public_id)
        raise Http404("The document file is missing.") from None
    response = FileResponse(
        handle,
        as_attachment=True,
        filename=document.filename,
        content_type=document.content_type,
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store, max-age=0"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# ---------------------------------------------------------------------------------------
# Org side: /o/<org_slug>/kyc/
# ---------------------------------------------------------------------------------------


def _form_data(application: KycApplication | None) -> dict[str, str]:
    if application is None:
        return {}
    return {
        "legal_name": application.legal_name,
        "registration_number": application.registration_number,
        "country": application.country,
        "address": application.address,
        "director_name": application.director_name,
    }


class KycView(OrgView):
    """Every member sees the status; owners and admins submit and see the documents."""

    # Its body may carry every document (config.middleware.BoundedBodyMiddleware).
    accepts_uploads = True

    required_role = "member"
    template_name = "platform_admin/kyc_form.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        history = selectors.kyc_application_list(org=self.org)
        return self._render(request, history, form=None)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not self.membership.has_role("admin"):
            raise PermissionDenied("Only owners and admins submit the KYC application.")
        history = selectors.kyc_application_list(org=self.org)
        current = history[0] if history else None
        previous_documents = list(current.documents.all()) if current else []
        form = KycForm(request.POST, request.FILES, previous_documents=previous_documents)
        if not form.is_valid():
            return self._render(request, history, form=form, status=400)
        data = form.cleaned_data
        try:
            services.kyc_submit(
                org=self.org,
                legal_name=data["legal_name"],
                registration_number=data["registration_number"],
                country=data["country"],
                address=data["address"],
                director_name=data["director_name"],
                documents=data.get("documents") or [],
                keep_documents=data.get("keep_documents") or [],
                actor=Actor.signed_in(request),
                request=request,
            )
        except InvalidFields as exc:
            for field, errors in exc.fields.items():
                form.add_error(field if field in form.fields else None, errors)
            return self._render(request, history, form=form, status=400)
        except PlatformError as exc:
            messages.error(request, exc.message)
            return redirect(f"/o/{self.org.slug}/kyc/")
        messages.success(
            request, "KYC application submitted. Platform staff will review it shortly."
        )
        return redirect(f"/o/{self.org.slug}/kyc/")

    def _render(
        self,
        request: HttpRequest,
        history: list[KycApplication],
        *,
        form: KycForm | None,
        status: int = 200,
    ) -> HttpResponse:
        current = history[0] if history else None
        # An org approved (or under review) without an application on file, e.g. by
        # staff through the API, has nothing to submit: the page is read-only.
        decided = self.org.kyc_status in (KycStatus.APPROVED, KycStatus.PENDING)
        editable = not decided and (
            current is None or current.status == KycApplicationStatus.REJECTED
        )
        can_admin = self.membership.has_role("admin")
        if form is None and editable and can_admin:
            previous = list(current.documents.all()) if current else []
            form = KycForm(initial=_form_data(current), previous_documents=previous)
        context = self.get_context_data(
            current=current,
            history=history[1:],
            status=self.org.kyc_status,
            editable=editable,
            form=form,
            max_documents=max_documents(),
            max_size=human_size(max_bytes()),
        )
        return self.render_to_response(context, status=status)


class KycDocumentDownloadView(OrgMixin, View):
    """The org's own documents, for its owners and admins only."""

    required_role = "admin"

    def get(self, request: HttpRequest, doc_id: str) -> HttpResponseBase:
        document = selectors.kyc_document_get(org=self.org, public_id=doc_id)
        return document_response(document)


# ---------------------------------------------------------------------------------------
# The console: /platform/
# ---------------------------------------------------------------------------------------


class PlatformMixin(LoginRequiredMixin):
    """Base of every console page: platform staff with a verified second factor."""

    required_platform_role: ClassVar[str] = PlatformRole.PLATFORM_ADMIN

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        user = _user(request)
        if not user.is_platform_staff:
            # The console does not exist for anybody else.
            raise Http404("Not found.")
        if not user.is_verified():  # type: ignore[attr-defined]
            # The accounts middleware normally answers first; this is the second wall.
            next_query = urlencode({"next": request.get_full_path()})
            if user_has_second_factor(user=user):
                return redirect(f"{VERIFY_URL}?{next_query}")
            messages.warning(
                request,
                "The platform console needs two-factor authentication: set up an "
                "authenticator app or a passkey to continue.",
            )
            return redirect(SECURITY_URL)
        if (
            self.required_platform_role == PlatformRole.PLATFORM_OWNER
            and not user.is_platform_owner
        ):
            raise PermissionDenied("Only platform owners can open this page.")
        response = super().dispatch(request, *args, **kwargs)
        # Console pages hold other orgs' data: never cache them anywhere.
        patch_cache_control(response, private=True, no_store=True)
        return response


class PlatformView(PlatformMixin, View):
    section: ClassVar[str] = ""

    def render(
        self, request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
    ) -> HttpResponse:
        context = {"section": self.section, "staff": _user(request), **context}
        return render(request, template, context, status=status)


class DashboardView(PlatformView):
    section = "dashboard"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render(
            request,
            "platform_admin/dashboard.html",
            {
                "counts": selectors.platform_counts(),
                "queue": list(selectors.kyc_queue()[:5]),
            },
        )


class KycQueueView(PlatformView):
    section = "kyc"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render(
            request,
            "platform_admin/kyc_queue.html",
            {
                "queue": list(selectors.kyc_queue()),
                "reviewed": list(selectors.kyc_recently_reviewed()),
            },
        )


class KycDetailView(PlatformView):
    section = "kyc"

    def get(self, request: HttpRequest, kyc_id: str) -> HttpResponse:
        application = selectors.kyc_application_get(public_id=kyc_id)
        return self._render(request, application, RejectForm())

    def _render(
        self,
        request: HttpRequest,
        application: KycApplication,
        reject_form: RejectForm,
        status: int = 200,
    ) -> HttpResponse:
        history = [
            a for a in selectors.kyc_application_list(org=application.org) if a.pk != application.pk
        ]
        return self.render(
            request,
            "platform_admin/kyc_detail.html",
            {
                "application": application,
                "org": application.org,
                "documents": list(application.documents.all()),
                "history": history,
                "reject_form": reject_form,
            },
            status=status,
        )


class PlatformConfirmView(ConfirmMixin, PlatformView):
    """A console action behind the confirm step (config.confirm, ADR 0081)."""

    confirm_template = "platform_admin/confirm.html"

    def get_confirm_context(self) -> dict[str, Any]:
        return {"section": self.section, "staff": _user(self.request)}


class _KycDecisionView(PlatformConfirmView):
    section = "kyc"

    def application(self) -> KycApplication:
        if not hasattr(self, "_application"):
            self._application = selectors.kyc_application_get(public_id=self.kwargs["kyc_id"])
        return self._application

    def detail_url(self) -> str:
        return f"/platform/kyc/{self.application().public_id}/"

    def blocked(self) -> str:
        application = self.application()
        if application.is_pending:
            return ""
        return f"This application was already decided: {application.get_status_display()}."


class KycApproveView(_KycDecisionView):
    """The detail page's Approve asks here first; the step names the org whose live keys
    it opens."""

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        application = self.application()
        org = application.org
        return Confirmation(
            title=f"Approve {application.legal_name}?",
            subject=f"{org.name} ({org.slug})",
            subject_label="Organisation",
            what=(
                f"{org.name} can create live API keys from now on, and its owners and "
                "admins are emailed the approval."
            ),
            details=["An approval cannot be withdrawn from the console."],
            confirm_label="Approve application",
            button_id="confirm-approve-kyc",
            danger=False,
            cancel_url=self.detail_url(),
            blocked=self.blocked(),
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        request = self.request
        application = self.application()
        try:
            services.kyc_approve(
                application=application, actor=Actor.signed_in(request), request=request
            )
        except PlatformError as exc:
            messages.error(request, exc.message)
            return redirect(self.detail_url())
        messages.success(
            request,
            f"Approved {end_sentence(application.legal_name)} "
            f"{application.org.name}'s owners and admins "
            "have been emailed; live keys are now available to them.",
        )
        return redirect("/platform/kyc/")


class KycRejectView(_KycDecisionView):
    """The detail page's reason and Reject ask here first; the step shows the reason
    (editable) that the org's admins will read."""

    form_class = RejectForm

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        application = self.application()
        org = application.org
        return Confirmation(
            title=f"Reject {application.legal_name}?",
            subject=f"{org.name} ({org.slug})",
            subject_label="Organisation",
            what=(
                "The application is rejected and its owners and admins are emailed the reason "
                "below. They can correct it and apply again; until approved they have test "
                "keys only."
            ),
            confirm_label="Reject application",
            button_id="confirm-reject-kyc",
            cancel_url=self.detail_url(),
            blocked=self.blocked(),
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        assert isinstance(form, RejectForm)
        request = self.request
        application = self.application()
        try:
            services.kyc_reject(
                application=application,
                actor=Actor.signed_in(request),
                reason=form.cleaned_data["reason"],
                request=request,
            )
        except InvalidFields as exc:
            form.add_error("reason", exc.fields.get("reason", exc.messages))
            return self.render_confirm_step(form, status=400)
        except PlatformError as exc:
            messages.error(request, exc.message)
            return redirect(self.detail_url())
        messages.success(
            request,
            f"Rejected {end_sentence(application.legal_name)} "
            f"{application.org.name}'s owners and admins "
            "have been emailed the reason.",
        )
        return redirect("/platform/kyc/")


class StaffDocumentDownloadView(PlatformView):
    def get(self, request: HttpRequest, kyc_id: str, doc_id: str) -> HttpResponseBase:
        application = selectors.kyc_application_get(public_id=kyc_id)
        document = selectors.kyc_application_document_get(application=application, public_id=doc_id)
        services.kyc_document_record_download(
            document=document, actor=Actor.signed_in(request), request=request
        )
        return document_response(document)


class OrgListView(PlatformView):
    section = "organizations"

    def get(self, request: HttpRequest) -> HttpResponse:
        form = OrgSearchForm(request.GET)
        query = form.cleaned_data["q"] if form.is_valid() else ""
        status = request.GET.get("status", "")
        status = status if status in OrgStatus.values else ""
        paginator = Paginator(
            selectors.organization_search(query=query, status=status), ORGS_PER_PAGE
        )
        page = paginator.get_page(request.GET.get("page"))
        return self.render(
            request,
            "platform_admin/organization_list.html",
            {"form": form, "query": query, "status": status, "page": page},
        )


class OrgDetailView(PlatformView):
    section = "organizations"

    def get(self, request: HttpRequest, org_id: str) -> HttpResponse:
        org = selectors.organization_get(public_id=org_id)
        return self.render_detail(request, org)

    def render_detail(
        self,
        request: HttpRequest,
        org: Any,
        *,
        plan_form: PlanForm | None = None,
        limits_form: LimitsForm | None = None,
        status: int = 200,
    ) -> HttpResponse:
        keys = list(selectors.organization_keys(org=org))
        return self.render(
            request,
            "platform_admin/organization_detail.html",
            {
                "org": org,
                "plan_form": plan_form or PlanForm(initial={"plan": org.plan}),
                "limits_form": limits_form
                or LimitsForm(
                    initial={
                        "per_minute": org.custom_per_minute,
                        "burst": org.custom_burst,
                        "monthly": org.custom_monthly,
                    }
                ),
                "suspend_form": SuspendForm(),
                "plan_limits": PLAN_LIMITS[org.plan],
                "limits": org.limits,
                "members": list(selectors.organization_members(org=org)),
                "keys": keys,
                "applications": selectors.kyc_application_list(org=org),
                "events": list(selectors.organization_events(org=org)),
                "is_suspended": org.status == OrgStatus.SUSPENDED,
                "kyc_approved": org.kyc_status == KycStatus.APPROVED,
            },
            status=status,
        )


class OrgPlanView(OrgDetailView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, org_id: str) -> HttpResponse:
        org = selectors.organization_get(public_id=org_id)
        form = PlanForm(request.POST)
        if not form.is_valid():
            return self.render_detail(request, org, plan_form=form, status=400)
        services.org_set_plan(
            org=org,
            plan=form.cleaned_data["plan"],
            actor=Actor.signed_in(request),
            request=request,
        )
        messages.success(request, f"{org.name} is now on the {org.get_plan_display()} plan.")
        return redirect(f"/platform/organizations/{org.public_id}/")


class OrgLimitsView(OrgDetailView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, org_id: str) -> HttpResponse:
        org = selectors.organization_get(public_id=org_id)
        form = LimitsForm(request.POST)
        if not form.is_valid():
            return self.render_detail(request, org, limits_form=form, status=400)
        services.org_set_limits(
            org=org,
            per_minute=form.cleaned_data["per_minute"],
            burst=form.cleaned_data["burst"],
            monthly=form.cleaned_data["monthly"],
            actor=Actor.signed_in(request),
            request=request,
        )
        messages.success(request, f"Limits of {org.name} saved.")
        return redirect(f"/platform/organizations/{org.public_id}/")


class OrgSuspendView(PlatformConfirmView):
    """Suspension asks first and needs a reason (SuspendForm, checked here on the server):
    the step says that every key of the org stops at once."""

    section = "organizations"
    form_class = SuspendForm

    def organization(self) -> Any:
        if not hasattr(self, "_org"):
            self._org = selectors.organization_get(public_id=self.kwargs["org_id"])
        return self._org

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        org = self.organization()
        keys = sum(1 for key in selectors.organization_keys(org=org) if key.revoked_at is None)
        return Confirmation(
            title=f"Suspend {org.name}?",
            subject=f"{org.name} ({org.slug})",
            subject_label="Organisation",
            what=(
                f"The API refuses every key of {org.name} from the next request on "
                f"({keys} key{'s' if keys != 1 else ''} not revoked). Members can still sign "
                "in and see the dashboard; nobody is signed out."
            ),
            details=["Reactivating later lets the same keys work again."],
            confirm_label="Suspend organisation",
            button_id="confirm-suspend-org",
            cancel_url=f"/platform/organizations/{org.public_id}/",
            blocked="This organisation is already suspended."
            if org.status == OrgStatus.SUSPENDED
            else "",
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        assert isinstance(form, SuspendForm)
        org = self.organization()
        services.org_suspend(
            org=org,
            actor=Actor.signed_in(self.request),
            reason=form.cleaned_data["reason"],
            request=self.request,
        )
        messages.success(
            self.request, f"{org.name} is suspended: the API refuses every one of its keys."
        )
        return redirect(f"/platform/organizations/{org.public_id}/")


class OrgReactivateView(PlatformView):
    def post(self, request: HttpRequest, org_id: str) -> HttpResponse:
        org = selectors.organization_get(public_id=org_id)
        services.org_reactivate(org=org, actor=Actor.signed_in(request), request=request)
        messages.success(request, f"{org.name} is active again.")
        return redirect(f"/platform/organizations/{org.public_id}/")


class AdminsView(PlatformView):
    section = "admins"
    required_platform_role = PlatformRole.PLATFORM_OWNER

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, GrantAdminForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = GrantAdminForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, status=400)
        target = user_get_by_email(email=form.cleaned_data["email"])
        if target is None:
            form.add_error(
                "email", "No account uses this email. Ask them to sign in once, then try again."
            )
            return self._render(request, form, status=400)
        if target.is_platform_staff:
            form.add_error("email", f"{target.email} is already platform staff.")
            return self._render(request, form, status=400)
        try:
            services.platform_role_set(
                user=target,
                role=PlatformRole.PLATFORM_ADMIN,
                actor=Actor.signed_in(request),
                request=request,
            )
        except PlatformError as exc:
            form.add_error("email", exc.message)
            return self._render(request, form, status=400)
        messages.success(
            request,
            f"{target.email} is now a platform admin. They need two-factor authentication "
            "to open the console.",
        )
        return redirect("/platform/admins/")

    def _render(
        self, request: HttpRequest, form: GrantAdminForm, status: int = 200
    ) -> HttpResponse:
        staff = list(selectors.platform_staff_list())
        owner_count = sum(1 for u in staff if u.is_platform_owner)
        return self.render(
            request,
            "platform_admin/admin_list.html",
            {"form": form, "staff_members": staff, "owner_count": owner_count},
            status=status,
        )


class AdminRevokeView(PlatformConfirmView):
    """The staff table's Revoke asks here first (the email travels in the POST)."""

    section = "admins"
    required_platform_role = PlatformRole.PLATFORM_OWNER

    def get_confirm_form(self, data: QueryDict | None) -> forms.Form | None:
        form = RevokeRoleForm(data)
        form.fields["email"].widget = forms.HiddenInput()
        return form

    def target(self, form: forms.Form | None) -> User | None:
        if form is None or not form.is_bound or not form.is_valid():
            return None
        target = user_get_by_email(email=form.cleaned_data["email"])
        if target is None:
            raise Http404("No such staff member.")
        if not target.is_platform_staff:
            raise Http404("No such staff member.")
        return target

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        target = self.target(form)
        role = target.get_platform_role_display() if target else "platform role"
        return Confirmation(
            title=f"Revoke {target.email if target else 'this staff member'}'s {role.lower()}?",
            subject=target.email if target else "",
            subject_label=role,
            what=(
                "They lose the platform console at once: KYC review, organisations"
                + (", staff and system keys." if target and target.is_platform_owner else ".")
                + " Their own account and organisations are not touched."
            ),
            confirm_label="Revoke platform role",
            button_id="confirm-revoke-role",
            cancel_url="/platform/admins/",
            blocked="" if target else "Choose a staff member from the list.",
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        target = self.target(form)
        assert target is not None
        try:
            services.platform_role_set(
                user=target,
                role=PlatformRole.NONE,
                actor=Actor.signed_in(self.request),
                request=self.request,
            )
        except PlatformError as exc:
            messages.error(self.request, exc.message)
            return redirect("/platform/admins/")
        messages.success(self.request, f"{target.email} is no longer platform staff.")
        return redirect("/platform/admins/")


class SystemKeysView(PlatformView):
    section = "system_keys"
    required_platform_role = PlatformRole.PLATFORM_OWNER

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, SystemKeyForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        from apikeys.services import ApiKeyError

        form = SystemKeyForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, status=400)
        try:
            key, secret = services.system_key_create(
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scope"],
                expires_at=form.cleaned_data.get("expires_at"),
                actor=Actor.signed_in(request),
                request=request,
            )
        except ApiKeyError as exc:
            param = exc.param if exc.param in ("name", "expires_at") else None
            form.add_error(param or ("scope" if exc.param == "scopes" else None), exc.message)
            return self._render(request, form, status=400)
        except PlatformError as exc:
            form.add_error(None, exc.message)
            return self._render(request, form, status=400)
        response = self.render(
            request, "platform_admin/systemkey_secret.html", {"key": key, "secret": secret}
        )
        response["Cache-Control"] = "no-store"
        return response

    def _render(self, request: HttpRequest, form: SystemKeyForm, status: int = 200) -> HttpResponse:
        selected = set(form["scope"].value() or []) if form.is_bound else set()
        grid = scope_grid(selected, system=True)
        return self.render(
            request,
            "platform_admin/systemkey_list.html",
            {"form": form, "grid": grid, "keys": list(selectors.system_key_list())},
            status=status,
        )


class SystemKeyRevokeView(PlatformConfirmView):
    section = "system_keys"
    required_platform_role = PlatformRole.PLATFORM_OWNER

    def key(self) -> Any:
        if not hasattr(self, "_key"):
            self._key = selectors.system_key_get(public_id=self.kwargs["key_id"])
        return self._key

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        key = self.key()
        return Confirmation(
            title=f"Revoke the system key “{key.name}”?",
            subject=key.display,
            subject_label="System key",
            what=(
                "Every request with this key fails from the moment you confirm. A revoked "
                "key cannot be restored."
            ),
            details=[f"Scopes: {', '.join(key.scopes)}."],
            confirm_label="Revoke system key",
            button_id="confirm-revoke-system-key",
            cancel_url="/platform/system-keys/",
            blocked="This key is already revoked." if key.revoked_at else "",
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        key = self.key()
        services.system_key_revoke(
            key=key, actor=Actor.signed_in(self.request), request=self.request
        )
        messages.success(self.request, f"System key “{key.name}” is revoked; it stops working now.")
        return redirect("/platform/system-keys/")
