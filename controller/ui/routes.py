"""The web UI: server-rendered pages under ``/`` and ``/ui/...``, small forms, and
HTML fragments that the page polls to update itself.

Every page authenticates the session cookie again (see ``controller.ui.session``);
every POST checks the form's CSRF token first and the person's role second. Actions
go through the same use case as the API, with the person as the actor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.bodies import REASON_MAX_LENGTH
from controller.api.evaluation import EvaluationCounts
from controller.auth import Permission, Principal, Role
from controller.errors import NotFound, Refused, Unauthorized, VersionConflict
from controller.runtime import Runtime, RuntimeDep
from controller.ui import formatting, freeze_routes, overview_filter, pages
from controller.ui.session import (
    FormUser,
    SessionUser,
    SignInRequired,
    UiForbidden,
    check_signin_nonce,
    clear_session,
    end_session,
    new_signin_nonce,
    open_session,
    safe_next,
    set_session,
    set_signin_nonce,
)
from stages.actions import Action

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
LIVE_PREFIX = "/ui/live/"

router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """Mount the UI on ``app``: templates, static files, error pages and routes."""
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.filters.update(
        duration=formatting.duration,
        number=formatting.number,
        percent=formatting.percent,
        when=formatting.when,
        time_tag=formatting.time_tag,
        status_label=formatting.status_label,
        light_label=formatting.light_label,
    )
    app.state.ui_templates = templates
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(UiForbidden, _forbidden)
    app.add_middleware(SecurityHeaders)
    app.include_router(router)
    app.include_router(freeze_routes.router)


# The UI loads only its own script and stylesheet, has no inline script or style, and
# posts forms only to itself: anything else a page tries (an injected script, a form
# to another site, being framed) the browser refuses.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_EVERY_ANSWER = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]
_UI_ONLY = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"referrer-policy", b"same-origin"),
]


def _is_ui(path: str) -> bool:
    return path == "/" or path.startswith("/ui/")


class SecurityHeaders:
    """nosniff and no framing on every answer through FastAPI; the CSP on the UI's
    (the API docs pages run inline scripts, which the CSP would block)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _EVERY_ANSWER + (_UI_ONLY if _is_ui(scope["path"]) else [])

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(n, v) for n, v in extra if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, with_headers)


def _render(
    request: Request,
    name: str,
    user: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.ui_templates
    base = {
        "user": user,
        "can_operate": user is not None and user.can(Permission.OPERATE),
        "csrf": getattr(request.state, "ui_csrf", ""),
    }
    response = templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status_code
    )
    # Pages show live state and forms with CSRF tokens: never from a cache.
    response.headers["Cache-Control"] = "no-store"
    return response


async def _sign_in_required(request: Request, _exc: Exception) -> Response:
    if request.url.path.startswith(LIVE_PREFIX):
        # The page's poller: a redirect would be followed silently; say it plainly.
        return HTMLResponse("signed out", status_code=401)
    target = request.url.path if request.method == "GET" else "/"
    if request.url.query and request.method == "GET":
        target += "?" + request.url.query
    response = RedirectResponse(f"/ui/signin?next={_quote(target)}", status_code=303)
    clear_session(response)
    return response


async def _forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UiForbidden)
    return _render(request, "error.html", None, 403, title="Not allowed", message=exc.message)


def reason_problem(reason: str) -> str | None:
    """What the API would refuse in a reason (ActionBody, SwitchBody), said for a person."""
    if len(reason) > REASON_MAX_LENGTH:
        return (
            f"The reason is {len(reason)} characters long; at most {REASON_MAX_LENGTH} fit "
            "in the audit log. Shorten it and try again."
        )
    if "\x00" in reason:
        return "The reason holds a NUL character, which the audit log cannot store."
    return None


def _quote(path: str) -> str:
    return quote(path, safe="/")


# --- sign-in --------------------------------------------------------------------------


@router.get("/ui/signin")
def signin_page(request: Request, next: str = "/") -> Response:
    nonce = new_signin_nonce()
    response = _render(request, "signin.html", None, nonce=nonce, next=safe_next(next))
    set_signin_nonce(response, request, request.app.state.runtime.settings, nonce)
    return response


@router.post("/ui/signin")
def signin(
    request: Request,
    runtime: RuntimeDep,
    token: Annotated[str, Form()] = "",
    nonce: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    check_signin_nonce(request, nonce)
    secret = token.strip()
    error = ""
    principal = None
    try:
        principal = runtime.tokens.authenticate(f"Bearer {secret}") if secret else None
    except Unauthorized:
        error = "That token is unknown or has been revoked."
    if principal is None and not error:
        error = "Paste your API token to sign in."
    if principal is not None and not principal.can(Permission.READ):
        error = (
            f"That token ({principal.name}) has role {principal.role}: it may evaluate flags "
            "but not use the UI. Use a viewer, operator or admin token."
        )
    if error:
        return _render(
            request, "signin.html", None, 401, nonce=nonce, next=safe_next(next), error=error
        )
    redirect = RedirectResponse(safe_next(next), status_code=303)
    set_session(redirect, request, runtime.settings, open_session(runtime, secret))
    return redirect


@router.post("/ui/signout")
def signout(request: Request, runtime: RuntimeDep, _user: FormUser) -> Response:
    end_session(runtime, request.state.ui_session)
    response = RedirectResponse("/ui/signin", status_code=303)
    clear_session(response)
    return response


# --- rollouts -------------------------------------------------------------------------


LabelQuery = Annotated[list[str], Query(description="team=memory; repeatable, all hold")]


@router.get("/")
def overview(
    request: Request,
    runtime: RuntimeDep,
    user: SessionUser,
    label: LabelQuery = [],  # noqa: B006 (FastAPI copies the default)
    q: str = "",
    status: str = "",
    page: str = "",
) -> Response:
    chosen = overview_filter.chosen(q, status, label, page)
    shown = pages.overview_page(runtime, runtime.clock(), chosen)
    return _render(
        request,
        "overview.html",
        user,
        422 if chosen.problem else 200,
        overview=shown,
        cards=shown.cards,
        chosen=chosen,
        label_filter=chosen.labels,
        statuses=overview_filter.STATUSES,
        # The poller asks for the rows this page shows, at the page it shows.
        live_url=chosen.url(page=shown.slice.page, path="/ui/live/overview"),
    )


@router.get("/ui/live/overview")
def overview_live(
    request: Request,
    runtime: RuntimeDep,
    user: SessionUser,
    label: LabelQuery = [],  # noqa: B006
    q: str = "",
    status: str = "",
    page: str = "",
) -> Response:
    chosen = overview_filter.chosen(q, status, label, page)
    shown = pages.overview_page(runtime, runtime.clock(), chosen)
    # A bad filter is the page's to say: the poller only swaps rows in.
    return _render(
        request,
        "live_overview.html",
        user,
        overview=shown,
        cards=shown.cards,
        chosen=chosen,
        label_filter=chosen.labels,
    )


@router.get("/ui/rollouts/{name}")
def rollout(
    request: Request, name: str, runtime: RuntimeDep, user: SessionUser, done: str = ""
) -> Response:
    return _rollout_response(request, runtime, user, name, done=done)


@router.get("/ui/live/rollouts/{name}")
def rollout_live(request: Request, name: str, runtime: RuntimeDep, user: SessionUser) -> Response:
    try:
        page = pages.rollout_page(runtime, name, runtime.clock())
    except NotFound as exc:
        return HTMLResponse(exc.message, status_code=404)
    return _render(request, "live_rollout.html", user, **page, form={})


def _rollout_response(
    request: Request,
    runtime: Runtime,
    user: Principal,
    name: str,
    *,
    status_code: int = 200,
    done: str = "",
    error: str = "",
    form: dict[str, str] | None = None,
) -> Response:
    try:
        page = pages.rollout_page(runtime, name, runtime.clock())
    except NotFound as exc:
        return _render(request, "error.html", user, 404, title="Not found", message=exc.message)
    return _render(
        request,
        "rollout.html",
        user,
        status_code,
        **page,
        done=done if done in {a.value for a in Action} else "",
        error=error,
        form=form or {},
        live_url=f"/ui/live/rollouts/{name}",
    )


@router.post("/ui/rollouts/{name}/actions/{action}")
def act(
    request: Request,
    name: str,
    action: str,
    runtime: RuntimeDep,
    user: FormUser,
    reason: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    seen_status: Annotated[str, Form()] = "",
    seen_step: Annotated[str, Form()] = "",
    force: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
    immediate: Annotated[str, Form()] = "",
) -> Response:
    if not user.can(Permission.OPERATE):
        raise UiForbidden(
            f"You are signed in as {user.name} with role {user.role}, which may look but not "
            f"act: the {action} was not done. Ask an admin for an operator token."
        )
    typed = {"reason": reason, "confirm": confirm}

    def refuse(status: int, message: str) -> Response:
        return _rollout_response(
            request, runtime, user, name, status_code=status, error=message, form=typed
        )

    try:
        chosen = Action(action)
    except ValueError:
        return refuse(404, f"There is no action {action!r}.")
    if not reason.strip():
        return refuse(422, f"Give a reason for the {chosen}: it goes into the audit log.")
    if (problem := reason_problem(reason)) is not None:
        return refuse(422, problem)
    forced = force == "1" and chosen is Action.ADVANCE
    if forced and confirm.strip() != name:
        return refuse(422, f"To force the advance, type the rollout name ({name}) to confirm.")
    seen = (seen_status, seen_step, version)
    try:
        _act_on_what_was_seen(
            runtime,
            name,
            chosen,
            user,
            seen,
            reason=reason.strip(),
            force=forced,
            immediate=immediate == "1",
            admin=user.role is Role.ADMIN,
        )
    except NotFound as exc:
        return refuse(404, exc.message)
    except Refused as exc:
        return refuse(409, f"Refused: {exc.message}.")
    except VersionConflict as exc:
        return refuse(409, exc.message)
    return RedirectResponse(f"/ui/rollouts/{name}?done={chosen.value}", status_code=303)


def _act_on_what_was_seen(
    runtime: Runtime,
    name: str,
    action: Action,
    user: Principal,
    seen: tuple[str, str, str],
    **options: Any,
) -> None:
    """Act only if the rollout is still as the person saw it: a compare-and-swap on the
    version the page showed (gate checks that only hold do not move it)."""
    _, _, seen_version = seen
    try:
        expected = int(seen_version)
    except ValueError:
        expected = -1  # a tampered form: refuse like a stale one
    try:
        runtime.rollouts.act(
            name,
            action,
            actor=user.actor,
            now=runtime.clock(),
            expected_version=expected,
            **options,
        )
    except VersionConflict:
        current = runtime.rollouts.get(name, runtime.clock())
        raise VersionConflict(
            f"Rollout {name} changed since you loaded it: it is now "
            f"{formatting.status_label(current['status'])} at step "
            f"{current['step'] + 1} ({current['step_label']}). Nothing was done; "
            "check the page and try again.",
            current_version=current["version"],
        ) from None


# --- flags ----------------------------------------------------------------------------


def _counts(request: Request) -> dict[str, dict[str, int]]:
    counts: EvaluationCounts | None = getattr(request.app.state, "evaluation_counts", None)
    return counts.by_flag() if counts is not None else {}


@router.get("/ui/flags")
def flags(
    request: Request,
    runtime: RuntimeDep,
    user: SessionUser,
    flag: str = "",
    key: str = "",
    attrs: str = "",
    done: str = "",
) -> Response:
    rows = pages.flags_page(runtime, _counts(request))
    result = None
    problems: list[str] = []
    if flag:
        attributes, problems = pages.parse_attributes(attrs)
        if not problems:
            result = pages.evaluate_for(runtime, flag, key.strip(), attributes)
    return _render(
        request,
        "flags.html",
        user,
        flags=rows,
        query={"flag": flag, "key": key, "attrs": attrs},
        result=result,
        problems=problems,
        done=done,
        live_url="/ui/live/flags",
    )


@router.get("/ui/live/flags")
def flags_live(request: Request, runtime: RuntimeDep, user: SessionUser) -> Response:
    rows = pages.flags_page(runtime, _counts(request))
    return _render(request, "live_flags.html", user, flags=rows)


@router.post("/ui/flags/kill-switch")
def kill_switch(
    request: Request,
    runtime: RuntimeDep,
    user: FormUser,
    flag: Annotated[str, Form()] = "",
    enabled: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    if not user.can(Permission.OPERATE):
        raise UiForbidden(
            f"You are signed in as {user.name} with role {user.role}, which may look but not "
            "change flags. Ask an admin for an operator token."
        )
    key = flag
    turn_on = enabled == "1"
    problem = reason_problem(reason) if reason.strip() else None
    if not reason.strip() or problem is not None:
        rows = pages.flags_page(runtime, _counts(request))
        return _render(
            request,
            "flags.html",
            user,
            422,
            flags=rows,
            query={},
            result=None,
            problems=[],
            error=problem or f"Give a reason for switching {key} {'on' if turn_on else 'off'}.",
            live_url="/ui/live/flags",
        )
    try:
        runtime.flags.set_enabled(
            key,
            turn_on,
            actor=user.actor,
            now=runtime.clock(),
            reason=reason.strip(),
            expected_version=None,
            rollouts=runtime.rollouts,
        )
    except NotFound as exc:
        return _render(request, "error.html", user, 404, title="Not found", message=exc.message)
    done = quote(f"{key} switched {'on' if turn_on else 'off'}")
    return RedirectResponse(f"/ui/flags?done={done}", status_code=303)
