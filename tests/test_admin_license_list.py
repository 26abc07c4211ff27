"""The admin's license list (issue #12): search by key, e-mail, domain and name; filters by
status, product and expiry with keyset pages; bulk issue; the CSV export."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import re
from urllib.parse import quote, urlencode

import pytest

from license_server.appkeys import RUNTIME
from license_server.db import staff as staff_rows
from license_server.db.licenses import upsert_binding
from license_server.licensing.actors import CLI
from license_server.licensing.lifecycle import Action
from license_server.licensing.specs import LicenseSpec, ProductSpec
from license_server.staff import rbac
from license_server.web.admin.license_export import csv_cell
from tests.test_admin_licenses import issue, staff_session

IDS = re.compile(r'href="/admin/licenses/(\d+)"')


def ids_in(page: str) -> list[int]:
    return [int(n) for n in IDS.findall(page)]


async def _issue(client, product: str = "mymod", **spec) -> tuple[int, str]:
    if product == "mymod":
        return await issue(client, **spec)
    runtime = client.app[RUNTIME]
    license, key = await runtime.licenses.issue(
        LicenseSpec(product=product, licensee="Other Ltd", email="x@other.example", **spec),
        actor=CLI,
    )
    return license.id, key


async def _second_product(client) -> None:
    await client.app[RUNTIME].licenses.create_product(ProductSpec(code="other", name="Other"))


async def _audit_actions(client) -> list[str]:
    async with client.app[RUNTIME].db.read() as conn:
        return [row["action"] for row in await staff_rows.audit_page(conn, None, 2000)]


async def _count(client) -> int:
    return sum((await client.app[RUNTIME].licenses.count_by_status()).values())


# -- search ---------------------------------------------------------------------------------


async def test_search_by_each_kind(client):
    runtime = client.app[RUNTIME]
    first, key = await issue(client)
    second, _ = await issue(client, company="")
    named, _ = await _issue_named(client, "Zebra Webworks", "Zed@Zebra.example")
    async with runtime.db.write() as conn:
        await upsert_binding(conn, second, kind="domain", value="shop.example.com",
                             raw_value="shop.example.com", is_dev=False, now=1)  # fmt: skip
    browser = await staff_session(client, "read_only")

    async def found(**params) -> list[int]:
        response, page = await browser.get("/admin/licenses?" + urlencode(params))
        assert response.status == 200, page
        return ids_in(page)

    assert await found(q=key) == [first]
    assert await found(q=key, by="key") == [first]
    assert await found(q=key[:-1] + ("0" if key[-1] != "0" else "1"), by="key") == []
    assert await found(q="zed@zebra.example") == [named]  # exact, any case
    assert await found(q="ZED@zebra.example", by="email") == [named]
    assert await found(q="zebra.example", by="email") == []
    assert await found(q="Shop.Example.com") == [second]
    assert await found(q="https://www.shop.example.com/", by="domain") == [second]
    assert await found(q="ebra web") == [named]  # a substring of the name, any case
    assert await found(q="zebra", by="name") == [named]
    assert sorted(await found(q="smith", by="name")) == sorted([first, second])
    assert await found(q="100%_", by="name") == []  # LIKE's wildcards are literal
    response, page = await browser.get("/admin/licenses?q=not+a+domain&by=domain")
    assert response.status == 400 and "not a domain" in page


async def _issue_named(client, licensee: str, email: str, **spec) -> tuple[int, str]:
    license, key = await client.app[RUNTIME].licenses.issue(  # after issue(): the product is
        LicenseSpec(product="mymod", licensee=licensee, email=email, **spec), actor=CLI
    )
    return license.id, key


# -- filters and pages ------------------------------------------------------------------------


async def test_filters_by_status_product_and_expiry(client):
    runtime = client.app[RUNTIME]
    today = dt.datetime.fromtimestamp(runtime.licenses.now(), dt.UTC).date()
    soon, later = today + dt.timedelta(days=10), today + dt.timedelta(days=400)
    never, _ = await issue(client)
    short, _ = await issue(client, expires=soon)
    long, _ = await issue(client, expires=later)
    await _second_product(client)
    other, _ = await _issue(client, "other", expires=soon)
    await runtime.licenses.apply(short, Action.SUSPEND, actor=CLI)
    browser = await staff_session(client, "read_only")

    async def found(**params) -> set[int]:
        response, page = await browser.get("/admin/licenses?" + urlencode(params))
        assert response.status == 200, page
        return set(ids_in(page))

    assert await found() == {never, short, long, other}
    assert await found(status="suspended") == {short}
    assert await found(product="other") == {other}
    assert await found(product="mymod") == {never, short, long}
    # Both bounds include the day named; a license without expiry has no date to compare.
    assert await found(expires_to=soon.isoformat()) == {short, other}
    assert await found(expires_to=(soon - dt.timedelta(days=1)).isoformat()) == set()
    assert await found(expires_from=later.isoformat()) == {long}
    assert await found(expires_from=soon.isoformat(), expires_to=later.isoformat()) == {
        short, long, other,
    }  # fmt: skip
    assert await found(expires_to=soon.isoformat(), product="mymod", status="suspended") == {short}
    assert await found(q="smith", product="other") == set()


async def test_pages_keep_their_filters(client):
    for _ in range(53):
        await issue(client)
    await _second_product(client)
    others = {(await _issue(client, "other"))[0] for _ in range(3)}
    browser = await staff_session(client, "read_only")
    _, first = await browser.get("/admin/licenses?product=mymod&q=smith")
    ids = ids_in(first)
    link = re.search(r'<a href="(/admin/licenses\?[^"]*before=\d+[^"]*)">Next page', first)
    next_path = link.group(1).replace("&amp;", "&")
    assert "product=mymod" in next_path and "q=smith" in next_path
    _, second = await browser.get(next_path)
    more = ids_in(second)
    assert len(ids) == 50 and len(more) == 3 and not (set(ids) | set(more)) & others
    assert ids == sorted(ids, reverse=True) and max(more) < min(ids)
    assert "Next page" not in second


@pytest.mark.parametrize(
    "query",
    [
        "q=" + "a" * 301,  # oversize
        "q=a&q=b",  # repeated
        "status=a&status=b",
        "status=nonsense",
        "by=everything",
        "product=nope",
        "product=" + "p" * 40,
        "expires_to=31/12/2027",
        "expires_from=2027-02-30",
        "expires_from=99999-01-01",
        "before=abc",
        "before=-5",
        "before=99999999999999999999999",
        "q=%01bell",  # control character
        "q=%FF%FE",  # not UTF-8
    ],
)
async def test_hostile_list_queries_get_a_400_page(client, query):
    await issue(client)
    browser = await staff_session(client, "read_only")
    for path in ("/admin/licenses", "/admin/licenses.csv"):
        if query.startswith("before=") and path.endswith(".csv"):
            continue  # the export pages by itself; before= is ignored there
        response, page = await browser.get(f"{path}?{query}")
        if query == "q=%FF%FE":
            # Decoded with replacement characters by aiohttp: an ordinary search, no match.
            assert response.status in (200, 400), page
            continue
        assert response.status == 400, (path, query, page[:200])
        assert "text/html" in response.headers["Content-Type"] and "<script" not in page


# -- bulk issue -------------------------------------------------------------------------------


def _bulk_form(**changes) -> dict[str, str]:
    form = {"csrf": "csrf-license_manager", "count": "3", "product": "mymod",
            "licensee": "Reseller & Co", "email": "orders@reseller.example",
            "company": "", "domains": "", "expires": ""}  # fmt: skip
    form.update(changes)
    return form


async def test_bulk_issue_shows_the_keys_once_with_their_csv(client):
    await issue(client)  # the product
    before = await _count(client)
    browser = await staff_session(client, "license_manager")
    response, page = await browser.get("/admin/licenses/bulk")
    assert response.status == 200 and 'name="count"' in page
    response, page = await browser.post("/admin/licenses/bulk", _bulk_form())
    assert response.status == 200, page
    keys = re.findall(r'<code class="secret">([A-Z0-9-]+)</code>', page)
    assert len(keys) == 3 and all(k.startswith("MYMOD-") for k in keys)
    assert await _count(client) == before + 3
    assert response.headers["Cache-Control"] == "no-store"
    # The CSV is in the page itself (a data: link): no second request can show the keys.
    href = re.search(r'href="data:text/csv;charset=utf-8;base64,([^"]+)" download="([^"]+)"', page)
    assert href.group(2) == "licenses-mymod-3.csv"
    rows = list(csv.reader(io.StringIO(base64.b64decode(href.group(1)).decode())))
    assert rows[0] == ["id", "key", "product", "licensee", "email", "expires"]
    assert [row[1] for row in rows[1:]] == keys
    assert {row[3] for row in rows[1:]} == {"Reseller & Co"}
    runtime = client.app[RUNTIME]
    for row in rows[1:]:
        license = await runtime.licenses.license_by_key(row[1])
        assert (license.id, license.licensee_email) == (int(row[0]), "orders@reseller.example")
    actions = await _audit_actions(client)
    assert actions[:4] == ["license.issue"] * 3 + ["license.bulk_issue"]
    # Nothing answers a second time with the keys: there is no such route.
    response, _ = await browser.get("/admin/licenses/bulk/keys")
    assert response.status == 404


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"count": "0"}, "count:"),
        ({"count": "1001"}, "count:"),
        ({"count": "-1"}, "count:"),
        ({"count": "1e3"}, "count:"),
        ({"count": "abc"}, "count:"),
        ({"count": ""}, "count:"),
        ({"count": "9" * 40}, "count:"),
        ({"product": "nope"}, "nope"),
        ({"product": "<script>"}, "product"),
        ({"email": "not-an-address"}, "email:"),
        ({"licensee": "   "}, "licensee:"),
        ({"licensee": "bell\x07"}, "licensee:"),
        ({"licensee": "x" * 3000}, "licensee:"),
        ({"expires": "2001-01-01"}, "expires:"),
        ({"expires": "31/12/2027"}, "expires:"),
        ({"domains": "exa mple.com"}, "domains"),
    ],
)
async def test_bad_bulk_forms_issue_nothing(client, changes, expected):
    await issue(client)
    before = (await _count(client), len(await _audit_actions(client)))
    browser = await staff_session(client, "license_manager")
    response, page = await browser.post("/admin/licenses/bulk", _bulk_form(**changes))
    assert response.status == 400, page
    assert expected in page and "<script>" not in page
    assert (await _count(client), len(await _audit_actions(client))) == before


async def test_bulk_issue_hostile_requests(client):
    await issue(client)
    before = await _count(client)
    browser = await staff_session(client, "license_manager")
    # A repeated field, an oversize body, no CSRF token, another site: refused, none issued.
    repeated = [*_bulk_form().items(), ("count", "5")]
    response, _ = await browser.post("/admin/licenses/bulk", repeated)
    assert response.status == 400
    response, _ = await browser.post("/admin/licenses/bulk", _bulk_form(notes="n" * 20_000))
    assert response.status == 413
    response, _ = await browser.post("/admin/licenses/bulk", _bulk_form(csrf="wrong"))
    assert response.status == 403
    response, _ = await browser.post(
        "/admin/licenses/bulk", _bulk_form(), origin="https://evil.example"
    )
    assert response.status == 403
    response, _ = await browser.post(
        "/admin/licenses/bulk", b"count=\xff\xfe", **{"Content-Type": "text/plain"}
    )
    assert response.status in (400, 403)
    support = await staff_session(client, "support")
    response, page = await support.post("/admin/licenses/bulk", _bulk_form(csrf="csrf-support"))
    assert response.status == 403 and "Your role does not allow this." in page
    assert await _count(client) == before


async def test_a_bulk_licensee_name_is_shown_as_text(client):
    await issue(client)
    browser = await staff_session(client, "admin")
    form = _bulk_form(csrf="csrf-admin", count="1", licensee="<script>alert(1)</script>")
    response, page = await browser.post("/admin/licenses/bulk", form)
    assert response.status == 200 and "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- CSV export -------------------------------------------------------------------------------


async def _csv(browser, query: str = "") -> tuple[object, list[list[str]]]:
    response, text = await browser.get("/admin/licenses.csv" + (f"?{query}" if query else ""))
    return response, list(csv.reader(io.StringIO(text)))


async def test_the_csv_has_every_filtered_row_and_no_key(client, monkeypatch):
    from license_server.staff import license_list

    monkeypatch.setattr(license_list, "EXPORT_PAGE", 4)  # several keyset pages
    keys = [(await issue(client))[1] for _ in range(9)]
    await _second_product(client)
    other, _ = await _issue(client, "other")
    browser = await staff_session(client, "read_only")
    response, rows = await _csv(browser)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv; charset=utf-8")
    assert re.fullmatch(
        r'attachment; filename="licenses-\d{8}-\d{6}\.csv"',
        response.headers["Content-Disposition"],
    )
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert rows[0][:3] == ["id", "product", "status"] and len(rows) == 11
    ids = [int(row[0]) for row in rows[1:]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 10
    text = "\n".join(",".join(row) for row in rows)
    assert not any(key in text for key in keys)
    hints = {row[6] for row in rows[1:]}
    assert all(re.fullmatch(r"[A-Z]+-\.\.\.[0-9A-Z]{4}", hint) for hint in hints)
    assert "ops@smith.example" in text  # decrypted for the export
    _, rows = await _csv(browser, "product=other")
    assert [int(row[0]) for row in rows[1:]] == [other]
    _, rows = await _csv(browser, f"q={quote(keys[0])}")
    assert len(rows) == 2 and rows[1][6].endswith(keys[0][-4:])
    assert (await _audit_actions(client))[0] == "license.export"


async def test_the_csv_neutralises_formulas(client):
    await issue(client)
    hostile = ['=HYPERLINK("http://evil.example")', "+1+1", "-2+3", "@SUM(A1)", "\tx"]
    for name in hostile:
        await client.app[RUNTIME].licenses.issue(
            LicenseSpec(product="mymod", licensee="Safe", company=name.strip() or "x",
                        email="a@b.example"),
            actor=CLI,
        )  # fmt: skip
    browser = await staff_session(client, "read_only")
    _, rows = await _csv(browser)
    companies = {row[4] for row in rows[1:]}
    for cell in companies - {""}:
        assert cell[0] not in "=+-@\t\r", cell
    assert '\'=HYPERLINK("http://evil.example")' in companies and "'@SUM(A1)" in companies
    assert csv_cell("\rcmd") == "'\rcmd" and csv_cell("-5") == "'-5" and csv_cell(7) == "7"
    assert csv_cell("plain") == "plain" and csv_cell(None) == ""


async def test_the_export_by_role_and_signed_out(client):
    await issue(client)
    for role in rbac.ROLES:
        browser = await staff_session(client, role)
        response, rows = await _csv(browser)
        if rbac.has_permission(role, "license:read"):
            assert response.status == 200 and len(rows) == 2, role
        else:
            assert response.status == 403, role
    response = await client.get("/admin/licenses.csv", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/admin/login"
