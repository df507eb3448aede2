"""The HTML reports: rendered from a plain dict, opened in a real headless Chromium, safe with any names; cracks
and taping side by side, every photo in a table per site and day, severity that says why it is missing; the
summary they are rendered from, and `history`."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

from reports.charts import bar_chart, line_chart
from reports.render import ReportError, render_index, render_report, report_name
from tests.support.photos import write_photo
from tests.support.results import Result, add_results, day_summary, photo_rows

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
                     "mean_crack_pct": 0.8 if n else None, "crack_length_px": 400.0 + i if n else None,
                     "crack_length_mm": 20.0 + i if n else None, "taping_share_pct": 50.0 if n else None,
                     "taping_coverage_pct": 7.0 + i / 10 if n else None, "taping_length_px": 900.0 if n else None,
                     "taping_length_mm": 45.0 if n else None})
    return rows


def photo(name: str, overlay: str | None, crack_pct: float, severity: str | None = "medium",
          taping_pct: float = 0.0, day: str = "2026-11-24") -> dict:
    """A photo as the summary lists it (`daemon.summary.report_photo`)."""
    return {"name": name, "location": "L3", "captured_at": f"{day} 09:30:00", "day": day, "crack_pct": crack_pct,
            "crack_length_px": 812.0, "crack_length_mm": 40.6 if severity else None, "crack_max_width_px": 14.0,
            "crack_max_width_mm": 3.5 if severity else None, "crack_severity": severity,
            "taping_coverage_pct": taping_pct, "taping_components": 2 if taping_pct else 0,
            "taping_length_px": 1500.0 if taping_pct else 0.0, "taping_length_mm": None, "overlay_path": overlay,
            "crack_mask": None, "taping_mask": None}


def site_figures(site: str, photos: int, with_cracks: int, worst_photos: list[dict], days: list[int],
                 scale: str = "all", taped: list[dict] | None = None) -> dict:
    taped = taped or []
    return {"site": site, "photos": photos, "with_cracks": with_cracks, "scale": scale,
            "photos_scaled": photos if scale == "all" else 0,
            "sites_without_scale": [] if scale == "all" else [site],
            "crack_share_pct": 100 * with_cracks / photos if photos else None,
            "crack_length_px": 12345.6, "crack_length_mm": 617.3 if scale == "all" else None,
            "crack_area_px": 45678, "mean_crack_pct": 1.23, "widest_crack_px": 36.0,
            "widest_crack_mm": 9.0 if scale == "all" else None,
            "crack_widths_px": [{"label": "<5", "photos": 1}, {"label": "5–10", "photos": 2}],
            "severity": {"hairline": 0, "fine": 2, "medium": 1, "wide": 0}, "failures": 1,
            "with_taping": len(taped), "taping_share_pct": 100 * len(taped) / photos if photos else None,
            "taping_coverage_pct": 8.4, "taping_coverage_quartiles": {"q1": 4.0, "median": 9.5, "q3": 21.0},
            "taping_coverage_classes": [{"label": "<5", "photos": 3}, {"label": "5–10", "photos": 1}],
            "taping_segments": 17, "taping_length_px": 23456.0, "taping_length_mm": None,
            "worst": worst_photos, "most_taping": taped[:3], "least_taping": taped[3:],
            "all_photos": worst_photos + taped, "trend": trend(days, date(2026, 11, 24))}


def make_summary(tmp_path: Path, kind: str = "daily", day: str = "2026-11-24", site: str | None = None) -> dict:
    """Two sites (one without a scale), 30-day trends, crack and taping photos with real overlay files (one
    named like an XSS attack)."""
    outputs = tmp_path / "outputs"
    days_a = [0 if i % 7 == 5 else 4 + i % 3 for i in range(30)]
    days_b = [0 if i < 10 else 2 for i in range(30)]
    a = site_figures("tower-a", 31, 12, [
        photo("IMG_1.jpg", overlay(outputs / "tower-a/2026-11-24/IMG_1__overlay.jpg", (1600, 1200)), 12.3),
        photo(XSS_NAME, overlay(outputs / "tower-a/2026-11-24/x y&z__overlay.jpg", (400, 900), (200, 40, 40)), 8.1,
              "wide"),
        photo("IMG_3.jpg", None, 2.0, None),  # overlays turned off when it was processed
        photo("IMG_4.jpg", str(outputs / "tower-a/gone__overlay.jpg"), 1.5, "fine"),  # deleted since
    ], days_a, taped=[
        photo("TAPE_1.jpg", overlay(outputs / "tower-a/2026-11-24/T1__overlay.jpg", colour=(40, 110, 240)), 0.0,
              None, 41.0),
        photo("TAPE_2.jpg", overlay(outputs / "tower-a/2026-11-24/T2__overlay.jpg", colour=(60, 120, 230)), 0.0,
              None, 2.5),
    ])
    b = site_figures(HTML_SITE, 9, 3, [
        photo("IMG_9.jpg", overlay(outputs / "b/2026-11-24/IMG_9__overlay.jpg"), 4.0, None),
    ], days_b, scale="none")
    totals = {**site_figures("All sites", 40, 15, [], [x + y for x, y in zip(days_a, days_b, strict=True)],
                             scale="some"),
              "photos_scaled": 31, "sites_without_scale": [HTML_SITE], "failures": 2}
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
                     "no overlay", "3.5 mm", "TAPE_1.jpg", "taping 41.0%", "23,456 px"):
        assert expected in text, expected
    assert text.count("no overlay") == 2  # no overlay recorded, and an overlay deleted since
    images = v.images()
    assert len(images) == 5 and all(i["complete"] and i["width"] > 0 for i in images), images
    assert all("/thumbs/" in i["src"] for i in images)
    # each thumbnail links to its full-size overlay, which the browser can reach
    hrefs = v.page.eval_on_selector_all("figure.shot a", "els => els.map(e => e.href)")
    assert len(hrefs) == 5
    for href in hrefs:
        assert href.endswith("__overlay.jpg") and Path(unquote(urlparse(href).path)).is_file(), href
    charts = v.page.eval_on_selector_all("svg.chart", "els => els.map(e => e.getAttribute('aria-label'))")
    # 6 trend charts (3 of cracks, 3 of taping) for all sites and for each site
    assert len([c for c in charts if "per day" in c or c.startswith(("Share", "Mean"))]) == 18, charts
    assert charts.count("Photos with taping, by % taped (%)") == 3
    assert charts.count("Photos by widest crack (px)") == 2  # all sites (one without a scale) and that site


def test_self_contained_report_keeps_its_thumbnails_when_the_files_are_gone(tmp_path, visit):
    summary = make_summary(tmp_path, site="tower-a")
    path = render_report(summary, tmp_path / "out", self_contained=True)
    assert path.name == "daily-2026-11-24-tower-a.html"
    html = path.read_text()
    assert "thumbs/" not in html and not (tmp_path / "out" / "thumbs").exists()
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', html)) == 5

    shutil.rmtree(tmp_path / "outputs")
    mailed = tmp_path / "mail" / path.name
    mailed.parent.mkdir()
    shutil.copy(path, mailed)  # opened somewhere else, with nothing beside it
    v = visit(mailed)
    v.clean()
    images = v.images()
    assert len(images) == 5 and all(i["src"].startswith("data:image/jpeg") and i["width"] > 0 for i in images)
    # longest side 320 px
    sizes = v.page.eval_on_selector_all("img", "els => els.map(e => Math.max(e.naturalWidth, e.naturalHeight))")
    assert sizes == [320] * 5


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
    assert len(thumbs) == 5
    tables = sorted((out / "photos").rglob("*"))

    again = render_report(summary, out)
    assert again == first and again.read_bytes() == report and (out / "index.html").read_bytes() == index
    assert sorted((out / "thumbs").iterdir()) == thumbs and sorted((out / "photos").rglob("*")) == tables
    assert sorted(p.name for p in out.iterdir()) == [".index.lock", "daily-2026-11-24.html", "index.html", "index.json",
                                                      "photos", "thumbs"]


def test_the_index_lists_reports_without_index_data_by_their_names(tmp_path):
    """Reports written by a version before index.json, or with the file damaged, are still listed."""
    out = tmp_path / "out"
    render_report(make_summary(tmp_path, day="2026-11-24"), out)
    (out / "index.json").write_text("{not json")
    (out / "weekly-2026-11-16-tower-b.html").write_text("<p>an older weekly report</p>")
    html = render_index(out).read_text()
    assert 'href="daily-2026-11-24.html"' in html and 'href="weekly-2026-11-16-tower-b.html"' in html
    assert "tower-b" in html


# ---- taping, every photo, severity without a scale: from the store to the browser ----------------

BOLD = "<b>bold<b> & co.jpg"


def a_day(store, folder: Path) -> None:
    """tower-a with a scale: crack photos and taping photos; tower-b without one, a photo named like markup."""
    add_results(store, folder, [
        Result("tower-a", "2026-11-24", "crack_wide.jpg", crack_pct=4.0, crack_width_px=30, mm_per_pixel=0.25),
        Result("tower-a", "2026-11-24", "crack_fine.jpg", crack_pct=0.5, crack_width_px=3, mm_per_pixel=0.25),
        Result("tower-a", "2026-11-24", "taped_most.jpg", taping_pct=45.0, segments=3, mm_per_pixel=0.25),
        Result("tower-a", "2026-11-24", "taped_some.jpg", taping_pct=20.0, segments=2, mm_per_pixel=0.25),
        Result("tower-a", "2026-11-24", "taped_more.jpg", taping_pct=30.0, segments=2, mm_per_pixel=0.25),
        Result("tower-a", "2026-11-24", "taped_less.jpg", taping_pct=8.0, segments=1, mm_per_pixel=0.25),
        Result("tower-a", "2026-11-24", "taped_least.jpg", taping_pct=3.0, segments=4, mm_per_pixel=0.25),
        Result("tower-a", "2026-11-24", "bare.jpg", mm_per_pixel=0.25),
        Result("tower-b", "2026-11-24", BOLD, crack_pct=2.0, crack_width_px=12, taping_pct=10.0, segments=1),
        Result("tower-b", "2026-11-24", "b_crack.jpg", crack_pct=1.0, crack_width_px=6),
    ])


def test_a_day_of_cracks_and_taping_reads_in_chromium_with_every_photo_one_click_away(tmp_path, visit):
    from daemon.store import Store
    from daemon.summary import write_report

    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    a_day(store, tmp_path)
    report = write_report(store, "daily", date(2026, 11, 24), date(2026, 11, 24), tmp_path / "reports")
    store.close()
    html = report.read_text()
    assert "<script" not in html.lower() and "&lt;b&gt;bold&lt;b&gt; &amp; co.jpg" in html
    v = visit(report)
    v.clean()
    a, b = v.page.locator("section#site-1"), v.page.locator("section#site-2")
    text = a.inner_text()
    for expected in ("Photos with taping", "5 62.5% of photos", "Taped segments", "12", "Total taped length",
                     "662 mm", "Most taping", "Least taping", "joints left untaped", "Crack length per day",
                     "Share of photos with taping", "Mean taping coverage", "Taped length per day"):
        assert expected in text, expected
    # the most taped photos first, then the least taped ones, lowest first; their overlays show the tape blue
    shots = a.locator("figure.shot")
    names = [shots.nth(i).locator(".name").inner_text() for i in range(shots.count())]
    assert names == ["crack_wide.jpg", "crack_fine.jpg", "taped_most.jpg", "taped_more.jpg", "taped_some.jpg",
                     "taped_least.jpg", "taped_less.jpg"]
    most = report.parent / a.locator("figure.shot img").nth(2).get_attribute("src")
    rgb = np.asarray(Image.open(most).convert("RGB")).astype(int)
    assert ((rgb[..., 2] - rgb[..., 0]) > 60).mean() > 0.2  # the tape's blue, over almost half the photo

    # severity: badges where the site has a scale; where it has none, why not and how to set it, widths in px
    assert a.locator(".figures .sev").count() == 4 and b.locator(".sev").count() == 0
    notice = b.locator(".notice").inner_text()
    assert "No crack severity: no scale." in notice and "sites.tower-b.mm_per_pixel" in notice
    assert "config.yaml" in notice and "Widest crack\n12 px" in b.inner_text()
    assert b.locator("svg[aria-label='Photos by widest crack (px)']").count() == 1

    # every photo one click away: the site's table of the day, its escaped name, the overlay and both masks
    v.page.click("section#site-2 p.photos-link a")
    assert v.page.url.endswith("/photos/2026-11-24/tower-b/by-time.html")
    v.clean()
    rows = v.page.eval_on_selector_all("tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
    assert [r[0] for r in rows] == [BOLD, "b_crack.jpg"] and rows[0][3:6] == ["2.0%", "80 px", "12 px"]
    links = v.page.eval_on_selector_all("tbody a", "els => els.map(e => e.href)")
    assert len(links) == 6 and all(Path(unquote(urlparse(u).path)).is_file() for u in links), links
    assert "<script" not in Path(unquote(urlparse(v.page.url).path)).read_text().lower()
    v.page.click("th a:text('Crack %')")  # sorting is another page, no script
    assert v.page.url.endswith("/by-crack.html")


def test_every_photo_of_a_2000_photo_day_is_in_each_ordering_of_its_table(tmp_path):
    rows = photo_rows(2000, "tower-a", "2026-11-24", tmp_path / "outputs", mm_per_pixel=0.2)
    out = tmp_path / "reports"
    report = render_report(day_summary(rows), out)
    assert 'href="photos/2026-11-24/tower-a/by-time.html"' in report.read_text()
    assert "photos/" not in (out / "index.html").read_text()  # the tables are reached from the reports only
    folder = out / "photos/2026-11-24/tower-a"
    pages = sorted(p.name for p in folder.iterdir())
    assert pages == sorted(f"by-{o}.html" for o in ("file", "location", "time", "crack", "crack-length",
                                                    "crack-width", "taping", "taping-length"))
    names = sorted(r["name"] for r in rows)
    columns = {}
    for page in pages:
        html = (folder / page).read_text()
        body = html[html.index("<tbody>"): html.index("</tbody>")]
        cells = [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", tr)]
                 for tr in re.findall(r"<tr>(.*?)</tr>", body)]
        assert sorted(c[0] for c in cells) == names, page  # every photo, once
        columns[page] = cells
        links = re.findall(r'<th><a href="(by-[a-z-]+\.html)">', html)
        assert sorted([*links, page]) == pages  # each header leads to the other orderings
    assert [c[0] for c in columns["by-file.html"]] == names
    assert [c[2] for c in columns["by-time.html"]] == sorted(c[2] for c in columns["by-time.html"])
    assert [c[1] for c in columns["by-location.html"]] == sorted(c[1] for c in columns["by-location.html"])
    crack = [float(c[3].rstrip("%")) for c in columns["by-crack.html"]]
    taping = [float(c[6].rstrip("%")) for c in columns["by-taping.html"]]
    assert crack == sorted(crack, reverse=True) and taping == sorted(taping, reverse=True) and crack[0] > 0


def test_weekly_report_links_each_site_to_the_tables_of_its_days(tmp_path, visit):
    summary = make_summary(tmp_path, kind="weekly", day="2026-11-23")
    site = summary["sites"][1]
    site["all_photos"] = [photo(BOLD, None, 1.0, None, day="2026-11-23"), photo("B_2.jpg", None, 0.0, None),
                          photo("B_3.jpg", None, 2.0, None, day="2026-11-26")]
    v = visit(render_report(summary, tmp_path / "out"))
    v.clean()
    links = v.page.eval_on_selector_all("section#site-2 p.photos-link a", "els => els.map(e => [e.innerText, e.href])")
    assert [text for text, _ in links] == ["2026-11-23", "2026-11-24", "2026-11-26"]
    for _, href in links:
        page = Path(unquote(urlparse(href).path))
        assert page.is_file() and page.parent.name.startswith("-b-tower--b--"), page  # a safe folder name
    table = Path(unquote(urlparse(links[0][1]).path)).read_text()
    assert "&lt;b&gt;bold&lt;b&gt; &amp; co.jpg" in table and "B_2.jpg" not in table


def test_a_photo_with_a_malformed_day_is_refused_with_the_key_to_fix(tmp_path):
    summary = make_summary(tmp_path)
    summary["sites"][0]["all_photos"] = [{**photo("a.jpg", None, 0.0), "day": "../../etc"}]
    with pytest.raises(ReportError, match=r"summary\['sites'\]\[0\]\['all_photos'\]\[0\]\['day'\] is '../../etc'"):
        render_report(summary, tmp_path / "out")
    assert not (tmp_path / "etc").exists()


def test_bar_chart_draws_each_class_and_escapes_its_text():
    svg = bar_chart([("<5", 3), ("5–10", 0), ("<i>x</i>", None), ("≥40", 7)], "Coverage & <b>", "%")
    root = ET.fromstring(str(svg))
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert root.find("s:title", ns).text == "Coverage & <b> (%)" and "<i>" not in svg
    bars = root.findall("s:rect", ns)
    assert [r.find("s:title", ns).text for r in bars] == ["<5: 3", "≥40: 7"]  # no bar for 0 or unknown
    assert float(bars[1].get("height")) > 2 * float(bars[0].get("height"))
    assert [t.text for t in root.findall("s:text", ns)][-4:] == ["<5", "5–10", "<i>x</i>", "≥40"]


# ---- the summary and the history, from the store ---------------------------------------------------

def test_the_summary_counts_taping_like_cracks_and_lists_every_photo(tmp_path):
    from daemon.store import Store
    from daemon.summary import period_summary

    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    a_day(store, tmp_path)
    add_results(store, tmp_path, [Result("tower-a", "2026-11-22", "old.jpg", taping_pct=10.0, segments=1)])
    summary = period_summary(store, date(2026, 11, 24), date(2026, 11, 24))
    store.close()
    a, b = summary["sites"]
    assert (a["with_taping"], a["taping_share_pct"], a["taping_segments"]) == (5, 62.5, 12)
    assert a["taping_length_px"] == pytest.approx(25.0 * 106) and a["taping_length_mm"] == pytest.approx(6.25 * 106)
    assert a["taping_coverage_quartiles"] == {"q1": 8.0, "median": 20.0, "q3": 30.0}
    assert [c["photos"] for c in a["taping_coverage_classes"]] == [1, 1, 0, 2, 1]  # 3, 8, -, 20 30, 45 %
    assert [p["name"] for p in a["most_taping"]] == ["taped_most.jpg", "taped_more.jpg", "taped_some.jpg"]
    assert [p["name"] for p in a["least_taping"]] == ["taped_least.jpg", "taped_less.jpg"]
    assert len(a["all_photos"]) == 8 and a["all_photos"][0]["crack_mask"].endswith(".png")
    # the scale: tower-a's photos were measured with one, tower-b's without; all sites together, some
    assert (a["scale"], b["scale"], summary["totals"]["scale"]) == ("all", "none", "some")
    assert b["crack_length_mm"] is None and b["widest_crack_px"] == 12 and b["widest_crack_mm"] is None
    assert summary["totals"]["sites_without_scale"] == ["tower-b"] and summary["totals"]["all_photos"] == []
    day = {r["day"]: r for r in a["trend"]}
    assert day["2026-11-24"]["taping_share_pct"] == 62.5 and day["2026-11-22"]["taping_share_pct"] == 100.0
    assert day["2026-11-23"]["photos"] == 0 and day["2026-11-23"]["taping_share_pct"] is None  # a gap, not 0


def test_history_has_the_taping_columns_and_its_table_fits_80_columns(tmp_path, cli):
    import json

    from rich.console import Console

    from daemon.cli.reports import history_table
    from daemon.store import Store
    from daemon.summary import history

    store = Store.open(f"sqlite:///{tmp_path / 'qa.sqlite3'}")
    a_day(store, tmp_path)
    add_results(store, tmp_path, [Result("tower-b-east-wing", "2026-11-24", f"{i}.jpg", crack_pct=80.0,
                                         crack_width_px=9, taping_pct=60.0, segments=40) for i in range(150)],
                files=False)
    url = str(store.engine.url)
    rows = history(store, None, None, None)
    store.close()
    csv = cli("history", "--store", url, "--format", "csv").stdout.splitlines()
    assert csv[0].endswith(",photos_with_taping,taping_share_pct,mean_taping_coverage_pct,taping_segments,"
                           "taping_length_px,taping_length_mm")
    first = json.loads(cli("history", "--store", url, "--format", "json").stdout)[0]
    assert first["site"] == "tower-a" and first["taping_segments"] == 12 and first["taping_length_mm"] == 662.5

    console = Console(width=80, record=True)
    console.print(history_table(rows, list(rows[0]), "history by day"))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("2026-11-24")}
    assert lines["tower-a"].split()[3:] == ["25", "45", "mm", "0/1/0/1", "62.5", "13.2", "662", "mm"]
    assert lines["tower-b"].split()[6] == "—"  # no severity counts without a scale, not 0/0/0/0
    assert lines["tower-b-east-wing"].split()[4:] == ["480k", "px", "—", "100", "60", "225k", "px"]

    wide = cli("history", "--store", url, "--wide").stdout
    assert "segs" in wide and "tape px" in wide and "area%" in wide and "…" not in wide
