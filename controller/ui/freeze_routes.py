"""The web UI's freezes page: the active freezes and the rollouts each holds, a form to
freeze (operators and admins) and a button to unfreeze; through the same use case as
the API (``controller.freezes``), with the person as the actor."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from controller.auth import Permission, Principal
from controller.errors import Conflict, Invalid, NotFound
from controller.runtime import Runtime, RuntimeDep
from controller.ui.session import FormUser, SessionUser, UiForbidden

router = APIRouter(include_in_schema=False)
_ENDED_SHOWN = 20


@router.get("/ui/freezes")
def freezes_page(
    request: Request, runtime: RuntimeDep, user: SessionUser, done: str = ""
) -> Response:
    return _page(request, runtime, user, done=done)


@router.post("/ui/freezes")
def freeze(
    request: Request,
    runtime: RuntimeDep,
    user: FormUser,
    reason: Annotated[str, Form()] = "",
    until: Annotated[str, Form()] = "",
    tz: Annotated[str, Form()] = "",
    scope: Annotated[str, Form()] = "",
) -> Response:
    _may_change(user, "freeze")
    terms = [part.strip() for part in scope.split(",") if part.strip()]
    form = {"reason": reason, "until": until, "tz": tz, "scope": scope}
    try:
        made = runtime.freezes.create(
            reason=reason,
            until=until,
            scope=terms,
            tz=tz.strip() or None,
            actor=user.actor,
            now=runtime.clock(),
        )
    except Invalid as exc:
        problems = [
            f"{str(p['field']).removeprefix('body.')}: {p['message']}" for p in exc.problems
        ]
        return _page(request, runtime, user, 422, error="; ".join(problems), form=form)
    done = quote(f"freeze {made['id']} made ({made['sentence']})")
    return RedirectResponse(f"/ui/freezes?done={done}", status_code=303)


@router.post("/ui/freezes/{freeze_id}/end")
def unfreeze(request: Request, freeze_id: int, runtime: RuntimeDep, user: FormUser) -> Response:
    _may_change(user, "unfreeze")
    try:
        runtime.freezes.end(freeze_id, actor=user.actor, now=runtime.clock())
    except NotFound as exc:
        return _page(request, runtime, user, 404, error=exc.message)
    except Conflict as exc:
        return _page(request, runtime, user, 409, error=exc.message)
    return RedirectResponse(f"/ui/freezes?done={quote(f'freeze {freeze_id} ended')}", 303)


def _may_change(user: Principal, what: str) -> None:
    if not user.can(Permission.OPERATE):
        raise UiForbidden(
            f"You are signed in as {user.name} with role {user.role}, which may look but not "
            f"{what}. Ask an admin for an operator token."
        )


def _page(
    request: Request,
    runtime: Runtime,
    user: Principal,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    listed = runtime.freezes.listing(runtime.clock(), include_ended=True, limit=_ENDED_SHOWN)
    templates: Jinja2Templates = request.app.state.ui_templates
    response = templates.TemplateResponse(
        request,
        "freezes.html",
        {
            "user": user,
            "can_operate": user.can(Permission.OPERATE),
            "csrf": getattr(request.state, "ui_csrf", ""),
            "active": [f for f in listed if f["active"]],
            "ended": [f for f in listed if not f["active"]],
            "form": context.pop("form", {}),
            **context,
        },
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"
    return response
