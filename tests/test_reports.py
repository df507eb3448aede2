"""The HTML reports: rendered from a plain dict, opened in a real headless Chromium, safe with any names."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from reports.charts import line_chart
from reports.render import ReportError, render_index, render_report, report_name
from tests.support.photos import write_photo

XSS_NAME = "<script>alert(1)</script>.jpg"
HTML_SITE = "<b>tower</b>"


# ---- a realistic summary, as the daemon side would compute it ---------------------------------

def overlay(path: Path, size: tuple[int, int] = (640, 480), colour: tuple[int, int, int] = (90, 90, 90)) -> str:
    """An overlay JPEG of one colour, as the processor would have written; its path."""
    return str(write_photo(path, size, colour=colour))


def trend(photos: list[int], end: date) -> list[dict]:
    """One row per day, oldest first; zeros where no photos (None for the percentages of empty days)."""
    rows = []
    for i, n in enumerate(photos):
        day = end - timedelta(days=len(photos) - 1 - i)
        rows.append({"day": day.isoformat(), "photos": n, "crack_share_pct": 30.0 + i if n else None,
                     "mean_crack_pct": 0.8 if n else None, "taping_coverage_pct": 7.0 + i / 10 if n else None})
    return rows


def worst(name: str, overlay: str | None, crack_pct: float, severity: str | None = "medium") -> dict:
    return {"name": name, "location": "L3", "captured_at": "2026-11-24T09:30:00", "crack_pct": crack_pct,
            "length_px": 812.0, "max_width_px": 14.0, "max_width_mm": 3.5, "severity": severity, "overlay": overlay}


def site_figures(site: str, photos: int, with_cracks: int, worst_photos: list[dict], days: list[int]) -> dict:
    return {"site": site, "photos": photos, "with_cracks": with_cracks,
            "crack_share_pct": 100 * with_cracks / photos if photos else None,
            "crack_length_px": 12345.6, "crack_length_mm": 617.3 if site == "tower-a" else None,
            "crack_area_px": 45678, "mean_crack_pct": 1.23, "taping_coverage_pct": 8.4,
            "severity": {"hairline": 0, "fine": 2, "medium": 1, "wide": 0}, "failures": 1,
            "worst": worst_photos, "trend": trend(days, date(2026, 11, 24))}


def make_summary(tmp_path: Path, kind: str = "daily", day: str = "2026-11-24", site: str | None = None) -> dict:
    """Two sites, 30-day trends, worst photos with real overlay files (one named like an XSS attack)."""
    outputs = tmp_path / "outputs"
    days_a = [0 if i % 7 == 5 else 4 + i % 3 for i in range(30)]
    days_b = [0 if i < 10 else 2 for i in range(30)]
    a = site_figures("tower-a", 31, 12, [
        worst("IMG_1.jpg", overlay(outputs / "tower-a/2026-11-24/IMG_1__overlay.jpg", (1600, 1200)), 12.3),
        worst(XSS_NAME, overlay(outputs / "tower-a/2026-11-24/x y&z__overlay.jpg", (400, 900), (200, 40, 40)), 8.1,
              "wide"),
        worst("IMG_3.jpg", None, 2.0, None),  # overlays turned off when it was processed
        worst("IMG_4.jpg", str(outputs / "tower-a/gone__overlay.jpg"), 1.5, "fine"),  # deleted since
    ], days_a)
    b = site_figures(HTML_SITE, 9, 3, [
        worst("IMG_9.jpg", overlay(outputs / "b/2026-11-24/IMG_9__overlay.jpg"), 4.0, "hairline"),
    ], days_b)
    totals = {**site_figures("All sites", 40, 15, [], [x + y for x, y in zip(days_a, days_b, strict=True)]),
              "crack_length_mm": None, "failures": 2}
    return {
        "kind": kind, "title": f"{kind.capitalize()} QA report", "date": day,
        "period": {"start": day, "end": day if kind == "daily" else
                   (date.fromisoformat(day) + timedelta(days=6)).isoformat()},
        "site": site, "generated_at": "2026-11-24T18:00:03", "model_versions": ["compact-v1"],
        "totals": totals, "sites": [a, b],
        "failures": [
            {"at": "2026-11-24T10:02:11", "path": "/in/a/<img src=x onerror=alert(2)>.jpg", "stage": "intake",
             "error": "not a JPEG", "quarantined_to": "/q/a/bad.jpg"},
            {"at": "2026-11-24T11:00:00", "path": "/in/b/c.jpg", "stage": "process", "error": "model failed",
             "quarantined_to": None},
        ],
    }


# ---- tests ----------------------------------------------------------------------------------------

def test_daily_report_renders_from_a_plain_dict_and_opens_cleanly_in_chromium(tmp_path, visit):
    summary = make_summary(tmp_path)
    path = render_report(summary, tmp_path / "out")
    assert path == tmp_path / "out" / "daily-2026-11-24.html"
    html = path.read_text()
    assert "<script" not in html.lower(), "the page must carry no JavaScript"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in html and "&lt;b&gt;tower&lt;/b&gt;" in html

    v = visit(path)
    v.clean()
    text = v.page.inner_text("body")
    for expected in ("31", "40", "12", "38.7%", "617 mm", "12,346 px", "45,678 px²", "8.4%", "compact-v1",
                     XSS_NAME, HTML_SITE, "Site: <b>tower</b>", "not a JPEG", "/in/a/<img src=x onerror=alert(2)>.jpg",
                     "no overlay", "3.5 mm"):
        assert expected in text, expected
    assert text.count("no overlay") == 2  # no overlay recorded, and an overlay deleted since
    images = v.images()
    assert len(images) == 3 and all(i["complete"] and i["width"] > 0 for i in images), images
    assert all("/thumbs/" in i["src"] for i in images)
    # each thumbnail links to its full-size overlay, which the browser can reach
    hrefs = v.page.eval_on_selector_all("figure.shot a", "els => els.map(e => e.href)")
    assert len(hrefs) == 3
    for href in hrefs:
        assert href.endswith("__overlay.jpg") and Path(unquote(urlparse(href).path)).is_file(), href
    assert v.page.locator("svg.chart").count() == 9  # 3 charts for all sites and for each of the 2 sites


def test_self_contained_report_keeps_its_thumbnails_when_the_files_are_gone(tmp_path, visit):
    summary = make_summary(tmp_path, site="tower-a")
    path = render_report(summary, tmp_path / "out", self_contained=True)
    assert path.name == "daily-2026-11-24-tower-a.html"
    html = path.read_text()
    assert "thumbs/" not in html and not (tmp_path / "out" / "thumbs").exists()
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', html)) == 3

    shutil.rmtree(tmp_path / "outputs")
    mailed = tmp_path / "mail" / path.name
    mailed.parent.mkdir()
    shutil.copy(path, mailed)  # opened somewhere else, with nothing beside it
    v = visit(mailed)
    v.clean()
    images = v.images()
    assert len(images) == 3 and all(i["src"].startswith("data:image/jpeg") and i["width"] > 0 for i in images)
    # longest side 320 px
    sizes = v.page.eval_on_selector_all("img", "els => els.map(e => Math.max(e.naturalWidth, e.naturalHeight))")
    assert sizes == [320, 320, 320]


def test_index_lists_every_report_newest_first_with_names_escaped(tmp_path, visit):
    out = tmp_path / "out"
    index = render_index(out)  # nothing rendered yet
    v = visit(index)
    v.clean()
    assert "No reports yet" in v.page.inner_text("body")

    render_report(make_summary(tmp_path, day="2026-11-23"), out)
    render_report(make_summary(tmp_path, day="2026-11-24", site=HTML_SITE), out)
    render_report(make_summary(tmp_path, day="2026-11-24"), out)
    render_report(make_summary(tmp_path, kind="weekly", day="2026-11-16"), out)
    (out / "notes.html").write_text("<p>not a report</p>")

    html = (out / "index.html").read_text()
    assert "<b>tower</b>" not in html and "&lt;b&gt;tower&lt;/b&gt;" in html
    v = visit(out / "index.html")
    v.clean()
    rows = v.page.eval_on_selector_all(
        "tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")
    assert [r[:3] for r in rows] == [
        ["2026-11-24", "daily", "All sites"],
        ["2026-11-24", "daily", HTML_SITE],  # the real name, read back from the report
        ["2026-11-23", "daily", "All sites"],
        ["2026-11-16 – 2026-11-22", "weekly", "All sites"],
    ]
    assert rows[0][3:] == ["40", "37.5%"]
    links = v.page.eval_on_selector_all("tbody a", "els => els.map(e => e.getAttribute('href'))")
    assert links == ["daily-2026-11-24.html", "daily-2026-11-24--b-tower--b-.html", "daily-2026-11-23.html",
                     "weekly-2026-11-16.html"]
    assert all((out / link).is_file() for link in links)


def test_report_names_are_file_name_safe_and_bad_keys_are_refused(tmp_path):
    assert report_name("weekly", "2026-11-23", "tower a/../b") == "weekly-2026-11-23-tower-a-..-b.html"
    assert report_name("daily", "2026-11-24", None) == "daily-2026-11-24.html"
    summary = make_summary(tmp_path)
    with pytest.raises(ReportError, match=r"summary\['kind'\] is 'monthly'; use one of daily, weekly"):
        render_report({**summary, "kind": "monthly"}, tmp_path / "out")
    with pytest.raises(ReportError, match=r"summary\['date'\] is '../../etc'; use a day as YYYY-MM-DD"):
        render_report({**summary, "date": "../../etc"}, tmp_path / "out")


def test_report_renders_with_unknown_numbers_and_no_sites(tmp_path, visit):
    summary = {"kind": "daily", "date": "2026-11-24", "site": None,
               "totals": {"site": "All sites", "photos": 0, "with_cracks": 0, "crack_share_pct": None,
                          "crack_length_px": None, "crack_length_mm": None, "crack_area_px": None,
                          "mean_crack_pct": None, "taping_coverage_pct": None, "severity": {}, "failures": 0,
                          "worst": [], "trend": []},
               "sites": [], "failures": [], "model_versions": []}
    v = visit(render_report(summary, tmp_path / "out"))
    v.clean()
    text = v.page.inner_text("body")
    assert "Daily QA report" in text and "—" in text and "No photo failed in this period." in text


def test_line_chart_leaves_gaps_for_unknown_days_and_escapes_its_text():
    points = [("2026-11-01", 1.0), ("2026-11-02", 2.0), ("2026-11-03", None), ("2026-11-04", 4.0),
              ("2026-11-05", float("nan")), ("<i>x</i>", 5.0), ("2026-11-07", 6.5)]
    svg = line_chart(points, "Share & <script>alert(1)</script>", "%")
    assert "<script" not in svg and "<i>" not in svg
    root = ET.fromstring(str(svg))  # well-formed XML, hence well-formed inline SVG
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert root.find("s:title", ns).text == "Share & <script>alert(1)</script> (%)"
    lines = root.findall("s:polyline[@stroke-width='2']", ns)
    assert [len(p.get("points").split()) for p in lines] == [2, 2]  # days 1-2 and 6-7; day 4 stands alone
    assert len(root.findall("s:circle", ns)) == 5  # one dot per known day
    labels = [t.text for t in root.findall("s:text", ns)]
    assert "2026-11-01" in labels and "<i>x</i>" not in labels and "2026-11-07" in labels
    assert labels[2:6] == ["0", "2", "4", "6"] and "8" in labels  # gridlines from zero past the highest value

    empty = ET.fromstring(str(line_chart([("2026-11-01", None)], "Empty", "photos")))
    assert "No data" in [t.text for t in empty.findall("s:text", ns)]


def test_rendering_the_same_summary_again_gives_the_same_files(tmp_path):
    summary = make_summary(tmp_path)
    out = tmp_path / "out"
    first = render_report(summary, out)
    report, index = first.read_bytes(), (out / "index.html").read_bytes()
    thumbs = sorted((out / "thumbs").iterdir())
    assert len(thumbs) == 3

    again = render_report(summary, out)
    assert again == first and again.read_bytes() == report and (out / "index.html").read_bytes() == index
    assert sorted((out / "thumbs").iterdir()) == thumbs
    assert sorted(p.name for p in out.iterdir()) == ["daily-2026-11-24.html", "index.html", "index.json", "thumbs"]


def test_the_index_lists_reports_without_index_data_by_their_names(tmp_path):
    """Reports written by a version before index.json, or with the file damaged, are still listed."""
    out = tmp_path / "out"
    render_report(make_summary(tmp_path, day="2026-11-24"), out)
    (out / "index.json").write_text("{not json")
    (out / "weekly-2026-11-16-tower-b.html").write_text("<p>an older weekly report</p>")
    html = render_index(out).read_text()
    assert 'href="daily-2026-11-24.html"' in html and 'href="weekly-2026-11-16-tower-b.html"' in html
    assert "tower-b" in html
