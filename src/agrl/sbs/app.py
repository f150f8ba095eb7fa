"""The rating page: FastAPI over a study file, plain HTML/JS/CSS shipped with the package (no build, no CDN).

    GET  /                 the rater's page (static/page.html, page.js, page.css)
    GET  /api/study        what the page needs: the scheme's labels, the study's size, k
    GET  /api/next?rater=  the rater's next item (blinded: the judges as A = left, B = right) + progress
    POST /api/answer       {rater, item_id, choice: left|right|both_good|both_bad, label?, comment?, replace?}
    POST /api/undo         {rater}: take back the rater's latest answer; returns that item
    GET  /results          the results page (sbs/report.py, `agrl report`'s HTML); /api/results its JSON

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

from agrl.sbs.store import MAX_COMMENT_CHARS, Refused, Study

STATIC = {"page.js": "text/javascript", "page.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    rater: str = Field(max_length=200)
    item_id: int
    choice: str
    label: int | None = None
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    replace: bool = False


class Rater(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    rater: str = Field(max_length=200)


def _static(name: str) -> str:
    return resources.files("agrl.sbs").joinpath("static", name).read_text(encoding="utf-8")


def make_app(study_path: str | Path) -> FastAPI:
    study = Study(study_path)  # UserError before the server starts when the file is not a study
    app = FastAPI(title="agrl side-by-side study", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
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

    @app.get("/api/study")
    def about() -> dict:
        return {"items": study.size, "raters_per_item": study.k, "labels": study.meta["scheme"]["levels"]}

    @app.get("/api/next")
    def next_item(rater: str = "") -> dict:
        return study.next_for(rater)

    @app.post("/api/answer")
    def answer(body: Answer) -> dict:
        return study.answer(body.rater, body.item_id, body.choice, body.label, body.comment, body.replace)

    @app.post("/api/undo")
    def undo(body: Rater) -> dict:
        return study.undo(body.rater)

    @app.get("/results", response_class=HTMLResponse)
    def results_page() -> str:
        from agrl.report import to_html  # here: matplotlib and scikit-learn load only when results are asked
        from agrl.sbs.report import results

        return to_html(results(study)[1])

    @app.get("/api/results")
    def results_json() -> dict:
        from agrl.sbs.report import results

        return results(study)[0]

    return app


def serve(study_path: str | Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    import uvicorn

    uvicorn.run(make_app(study_path), host=host, port=port, log_level="warning")
