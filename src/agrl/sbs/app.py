"""The rating page: FastAPI over a study file, plain HTML/JS/CSS shipped with the package (no build, no CDN).

Who is asking is a token: each rater's and the lead's, made by `agrl sbs serve --rater NAME`, which prints
a link per person (http://HOST:PORT/#token=...). The page posts the token from the link's fragment to
/api/login, which sets it as an HttpOnly, SameSite=Strict cookie; scripts may send `Authorization:
Bearer TOKEN` instead. Every route but the page itself, its static files and /api/login needs a valid
token (default-deny in a middleware: 401), and then the right role (403): raters answer, undo and replace
only their own answers (a body naming another rater is refused); only the lead reads the results, the
event log, the export, and adjudicates.

    GET  /                     the page (static/page.html, page.js, page.css): rater or lead view
    POST /api/login            {token}: sets the cookie; /api/logout clears it; /api/me: {name, role}
    GET  /api/study            the scheme's labels, the study's size, k, the score's scale
    GET  /api/next             the rater's next item (blinded: the judges as A = left, B = right) + progress
    POST /api/answer           {item_id, choice: left|right|both_good|both_bad, label?, comment?, replace?,
                                latency_ms?, rater? (must be the token's)}
    POST /api/undo             {rater?}: take back the rater's latest answer; returns that item
    GET  /results              lead: the results page (sbs/report.py); /api/results its JSON
    GET  /api/export?format=   lead: every answer as jsonl or csv (sbs/export.py); /api/events the event log
    GET  /api/disagreements    lead: items the raters answered differently; POST /api/adjudicate settles one

Untrusted text (titles, reasoning) only ever reaches the page as JSON and is set with textContent; the
Content-Security-Policy allows no inline script besides. A refused request is a 4xx with a message
(`{"detail": ...}`) and writes nothing (store.Refused; malformed bodies are FastAPI's 422).

    uvicorn.run(make_app("study.sqlite"), host="127.0.0.1", port=8080)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from agrl.sbs.store import LEAD, MAX_COMMENT_CHARS, MAX_ITEM_ID, Refused, Study

STATIC = {"page.js": "text/javascript", "page.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
COOKIE = "agrl_sbs"
PUBLIC = {("GET", "/"), ("GET", "/static/page.js"), ("GET", "/static/page.css"), ("POST", "/api/login")}
MAX_LATENCY_MS = 7 * 24 * 3600 * 1000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Answer(Strict):
    rater: str | None = Field(default=None, max_length=200)
    item_id: int = Field(ge=0, le=MAX_ITEM_ID)  # a larger id is a 422, not SQLite's overflow
    choice: str
    label: int | None = None
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    replace: bool = False
    latency_ms: int | None = Field(default=None, ge=0, le=MAX_LATENCY_MS)


class Rater(Strict):
    rater: str | None = Field(default=None, max_length=200)


class Login(Strict):
    token: str = Field(max_length=200)


class Adjudication(Strict):
    item_id: int = Field(ge=0, le=MAX_ITEM_ID)
    choice: str
    label: int | None = None
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


def _static(name: str) -> str:
    return resources.files("agrl.sbs").joinpath("static", name).read_text(encoding="utf-8")


def token_of(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE)


def rater_of(request: Request, claimed: str | None = None) -> str:
    """The token's rater; 403 for the lead's token or a body that names someone else."""
    name, role = request.state.who
    if role != "rater":
        raise Refused(403, "token: the lead's token reads results and adjudicates; raters answer with their own")
    if claimed is not None and claimed.strip() != name:
        raise Refused(403, f"rater: this token is {name}'s; it cannot act for {claimed!r}")
    return name


def lead_of(request: Request) -> str:
    name, role = request.state.who
    if role != LEAD:
        raise Refused(403, "token: only the lead's token reads the results, the export and adjudicates")
    return name


def make_app(study_path: str | Path, min_gold_accuracy: float | None = None) -> FastAPI:
    """The app; `min_gold_accuracy` leaves raters below it on gold items out of the results page."""
    study = Study(study_path)  # UserError before the server starts when the file is not a study
    app = FastAPI(title="agrl side-by-side study", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Default-deny: a route added later needs a token too unless listed in PUBLIC."""
        if (request.method, request.url.path) not in PUBLIC:
            who = study.who(token_of(request))
            if who is None:
                response = JSONResponse({"detail": "token: missing or not one of this study's; open the link "
                                                   "the study's lead gave you"}, status_code=401)
                response.headers.update(HEADERS)
                return response
            request.state.who = who
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, err: Refused):
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return _static("page.html")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, f"{name}: no such file")
        return Response(_static(name), media_type=STATIC[name])

    @app.post("/api/login")
    def login(body: Login) -> JSONResponse:
        who = study.who(body.token)
        if who is None:
            raise Refused(401, "token: not one of this study's; open the link the study's lead gave you")
        response = JSONResponse({"name": who[0], "role": who[1]})
        response.set_cookie(COOKIE, body.token, httponly=True, samesite="strict", max_age=90 * 24 * 3600)
        return response

    @app.post("/api/logout")
    def logout() -> JSONResponse:
        response = JSONResponse({"ok": True})
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    @app.get("/api/me")
    def me(request: Request) -> dict:
        name, role = request.state.who
        return {"name": name, "role": role}

    @app.get("/api/study")
    def about() -> dict:
        return {"items": study.size, "raters_per_item": study.k, "labels": study.meta["scheme"]["levels"],
                "score": score_scale(study), "score_range": f"{min(study.codes)}–{max(study.codes)}"}

    @app.get("/api/next")
    def next_item(request: Request, rater: str | None = None) -> dict:
        return study.next_for(rater_of(request, rater))

    @app.post("/api/answer")
    def answer(request: Request, body: Answer) -> dict:
        return study.answer(rater_of(request, body.rater), body.item_id, body.choice, body.label, body.comment,
                            body.replace, body.latency_ms)

    @app.post("/api/undo")
    def undo(request: Request, body: Rater) -> dict:
        return study.undo(rater_of(request, body.rater))

    @app.get("/results", response_class=HTMLResponse)
    def results_page(request: Request) -> str:
        from agrl.evaluation.report import to_html  # here: matplotlib and scikit-learn load only when results are asked
        from agrl.sbs.report import results

        lead_of(request)
        return to_html(results(study, min_gold_accuracy=min_gold_accuracy)[1])

    @app.get("/api/results")
    def results_json(request: Request) -> dict:
        from agrl.sbs.report import results

        lead_of(request)
        return results(study, min_gold_accuracy=min_gold_accuracy)[0]

    @app.get("/api/export")
    def export(request: Request, format: str = "jsonl") -> Response:
        from agrl.sbs.export import FORMATS, render

        lead_of(request)
        if format not in FORMATS:
            raise Refused(422, f"format: {format!r} is not one of {', '.join(FORMATS)}")
        name = f"{Path(study.path).stem}_answers.{format}"
        return Response(render(study, format), media_type=FORMATS[format],
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/events")
    def events(request: Request) -> list[dict]:
        lead_of(request)
        return study.events()

    @app.get("/api/disagreements")
    def disagreements(request: Request) -> list[dict]:
        lead_of(request)
        return study.disagreements()

    @app.post("/api/adjudicate")
    def adjudicate(request: Request, body: Adjudication) -> dict:
        return study.adjudicate(lead_of(request), body.item_id, body.choice, body.label, body.comment)

    return app


def score_scale(study: Study) -> str:
    """What a judge's score means, for the page: the expected label under its probabilities."""
    codes = study.codes
    return f"expected label (the labels' codes weighted by the judge's probabilities), {min(codes)} to {max(codes)}"


def serve(study_path: str | Path, host: str = "127.0.0.1", port: int = 8080,
          min_gold_accuracy: float | None = None) -> None:
    import uvicorn

    uvicorn.run(make_app(study_path, min_gold_accuracy), host=host, port=port, log_level="warning")
