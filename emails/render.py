"""One folder per email: templates/emails/<name>/{subject.txt, body.txt, body.html}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import render_template


@dataclass(frozen=True)
class Email:
    kind: str
    to: str
    subject: str
    text: str
    html: str


def render(kind: str, to: str, **context: Any) -> Email:
    base = f"emails/{kind}"
    subject = " ".join(render_template(f"{base}/subject.txt", **context).split())
    return Email(
        kind=kind,
        to=to,
        subject=subject,
        text=render_template(f"{base}/body.txt", **context),
        html=render_template(f"{base}/body.html", **context),
    )
