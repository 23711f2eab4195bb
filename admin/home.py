"""The staff home page."""

from __future__ import annotations

from flask import render_template

from admin.guard import bp, staff_required


@bp.get("/")
@staff_required("read")
def home() -> str:
    return render_template("admin/home.html")
