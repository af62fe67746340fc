"""Generate the labelled invoice dataset of the built-in `document_triage` workflow.

    .venv/bin/python datasets/invoices/generate.py            # rewrites train.jsonl and eval.jsonl here
    .venv/bin/python datasets/invoices/generate.py --out DIR  # somewhere else (the tests compare bytes)

Deterministic: the same seeds give the same bytes. Each case is a supplier invoice as plain text,
its true extraction (`expected.extract`, the Invoice schema) and the built-in policy's decision
on it (`expected.decide.decision`). The decision is computed, not written by hand: the real
ledger MCP server is started as the workflow starts it, the workflow's own tool nodes
(vendor, purchase_order, prior_invoices) look the true extraction up in it, and the workflow's
function nodes (analyze_invoice, decide_invoice) decide. Vendors, purchase orders and
duplicate invoice numbers come from the ledger's seed data, or are deliberately absent from it.
See README.md beside this file for the format, the tags and the splits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from layouts import EVAL_ONLY_LAYOUTS, LANGUAGE, Doc, Style, render

HERE = Path(__file__).resolve().parent
SPLITS = {"train": (300, 12_001), "eval": (150, 12_002)}  # cases, seed
WORKFLOW = "document_triage"

# Vendors that are not in the ledger's vendor master: (name, country, address, number prefix).
# The eval split adds vendors the training split never shows.
TRAIN_VENDORS = [
    ("Blue Harbor Catering", "GB", "7 Quay Street, Bristol BS1 4QA", "BHC-"),
    ("Litware Cleaning Services", "GB", "Unit 12, Aire Park, Leeds LS10 1JP", "LCS"),
    ("Adatum Security Systems", "US", "400 Pine Street, Seattle, WA 98101", "ASS-"),
    ("Wide World Importers", "US", "1 Harbor Way, Oakland, CA 94607", "WWI-"),
    ("Proseware Software Ltd.", "GB", "3 Silicon Court, Reading RG1 2AB", "PSW/"),
    ("Lucerne Publishing", "CH", "Pilatusstrasse 41, 6003 Luzern", "LP-"),
    ("Alpine Ski House", "CH", "Dorfstrasse 3, 3920 Zermatt", "ASH-"),
    ("Bäckerei Sonnenschein GmbH", "DE", "Lindenallee 5, 50668 Köln", "RE-"),
    ("Kühn & Partner Elektrotechnik KG", "DE", "Hafenstraße 22, 28217 Bremen", "R-"),
    ("Papeterie Lefèvre SARL", "FR", "12 rue des Carmes, 69002 Lyon", "FA-"),
    ("Transports Moreau SA", "FR", "ZI des Bruyères, 45100 Orléans", "TM"),
    ("Imprimerie Girard & Fils", "FR", "7 quai de la Fosse, 44000 Nantes", "IG-"),
]
EVAL_VENDORS = [
    ("Coho Winery", "US", "88 Vineyard Road, Napa, CA 94558", "CW-"),
    ("Graphic Design Institute", "GB", "21 Mill Lane, Cambridge CB2 1RX", "GDI-"),
    ("Trey Research Ltd.", "GB", "9 Station Road, Oxford OX1 1HT", "TR"),
    ("Schreinerei Vogt GmbH", "DE", "Am Sägewerk 4, 79098 Freiburg", "SV-"),
    ("Nettoyage Dubois SARL", "FR", "4 avenue Foch, 33000 Bordeaux", "ND-"),
]
LEDGER_ADDRESS = {  # the vendor master holds no addresses; these are the letterheads
    "V-1001": "14 Harbour Row, Leeds LS1 4DY, United Kingdom", "V-1002": "Industriepark 12, 44147 Dortmund, Germany",
    "V-1003": "Unit 4, Skyline Park, Manchester M90 3RA, United Kingdom", "V-1004": "88 Market Street, Leeds LS1 6DT, United Kingdom",
}
LEDGER_PREFIX = {"V-1001": "INV-2026-", "V-1002": "FAB-", "V-1003": "TSF/26/", "V-1004": "NWT-"}
COUNTRY = {  # currency, VAT rates, language
    "GB": ("GBP", (0.2, 0.2, 0.0), "en"), "US": ("USD", (0.0, 0.07, 0.0825), "en"), "CH": ("CHF", (0.081, 0.026), "en"),
    "DE": ("EUR", (0.19, 0.19, 0.07), "de"), "FR": ("EUR", (0.2, 0.2, 0.1), "fr"),
}
ITEMS = {
    "en": [("A4 copier paper, 80 gsm (box of 5)", 2450), ("Toner cartridge TN-2420 (black)", 6100), ("Ergonomic office chair", 18900),
           ("Monthly cleaning, 2nd floor", 42000), ("Courier, same-day, Leeds-York", 3875), ("Catering, lunch for 12", 15600),
           ("Annual software licence, 5 seats", 125000), ("Badge reader maintenance", 9500), ("Printed brochures, A5 (500)", 21040),
           ("Pallet transport, Dortmund-Stuttgart", 64000), ("Safety gloves, size L (pack of 10)", 1290), ("Consulting, half day", 48000)],
    "de": [("Kopierpapier A4, 80 g (Karton)", 2390), ("Hydraulikschlauch DN12, 2 m", 4725), ("Wartung Druckluftanlage", 36000),
           ("Schutzhandschuhe Gr. 9 (10 Paar)", 1450), ("Montage vor Ort, Stunde", 8500), ("Frühstücksbuffet, 15 Personen", 21750)],
    "fr": [("Ramette papier A4, 80 g", 590), ("Transport palette Lyon-Stuttgart", 51000), ("Nettoyage bureaux, mois de novembre", 39000),
           ("Classeurs à levier (lot de 10)", 3450), ("Intervention technicien, heure", 7200)],
}
BALANCING = {"en": "Delivery, installation and handling", "de": "Lieferung, Montage und Verpackung", "fr": "Livraison, installation et emballage"}
SCENARIOS = [  # (flaw, weight): about 30% approve, 40% hold, 30% reject
    ("none", 30), ("no_po", 8), ("no_due_date", 5), ("unknown_vendor", 11), ("inactive_vendor", 4), ("po_mismatch", 7),
    ("no_invoice_number", 3), ("due_date_late", 2), ("arithmetic_lines", 9), ("arithmetic_total", 8), ("duplicate", 8), ("blocked_vendor", 5),
]


def load_ledger() -> dict[str, Any]:
    """The ledger's seed data, read from a database built the way the server builds it."""
    from flotilla.mcp_servers.ledger.db import build_database, connect_read_only

    with tempfile.TemporaryDirectory(prefix="flotilla-dataset-") as tmp:
        conn = connect_read_only(build_database(Path(tmp) / "ledger.sqlite"))
        rows = lambda sql: [dict(r) for r in conn.execute(sql).fetchall()]  # noqa: E731
        ledger = {
            "vendors": rows("SELECT * FROM vendors ORDER BY vendor_id"),
            "orders": rows("SELECT * FROM purchase_orders ORDER BY po_number"),
            "lines": rows("SELECT * FROM purchase_order_lines ORDER BY po_number, line_no"),
            "invoices": rows("SELECT * FROM invoices ORDER BY vendor_id, invoice_number"),
        }
        conn.close()
    return ledger


def cents(value: Any) -> int:
    return int(round(float(value) * 100))


class Builder:
    """Draws one invoice at a time; `used` keeps invoice numbers unique across both splits."""

    def __init__(self, ledger: dict[str, Any], rng: random.Random, split: str, used: set[str]) -> None:
        self.ledger, self.rng, self.split, self.used = ledger, rng, split, used
        by_status = lambda s: [v for v in ledger["vendors"] if v["status"] == s]  # noqa: E731
        self.active, self.blocked, self.inactive = by_status("active"), by_status("blocked"), by_status("inactive")
        self.open_orders = [o for o in ledger["orders"] if o["status"] in ("open", "partially_invoiced") and any(v["vendor_id"] == o["vendor_id"] for v in self.active)]
        self.unknown = TRAIN_VENDORS + (EVAL_VENDORS if split == "eval" else [])

    # -- who sends it -------------------------------------------------------------------
    def ledger_vendor(self, vendor: dict[str, Any]) -> dict[str, Any]:
        currency, rates, lang = COUNTRY[vendor["country"]]
        return {"name": vendor["name"], "address": LEDGER_ADDRESS.get(vendor["vendor_id"], "1 Main Street"), "vat": vendor["vat_number"], "iban": vendor["iban"],
                "email": vendor["email"], "terms": vendor["payment_terms"], "currency": currency, "rates": rates, "lang": lang,
                "prefix": LEDGER_PREFIX.get(vendor["vendor_id"], "INV-"),
                "tag": f"vendor_{vendor['status']}", "id": vendor["vendor_id"]}

    def unknown_vendor(self) -> dict[str, Any]:
        pool = EVAL_VENDORS if self.split == "eval" and self.rng.random() < 0.5 else self.unknown
        lang = self.rng.choice(["en", "en", "de", "fr"])  # the letterhead's language first, so all three are common
        pool = [v for v in pool if COUNTRY[v[1]][2] == lang] or pool
        name, country, address, prefix = self.rng.choice(pool)
        currency, rates, lang = COUNTRY[country]
        slug = name.split()[0].lower().replace("ä", "ae").replace("ü", "ue").replace("è", "e")
        vat = {"GB": "GB{}", "DE": "DE{}", "FR": "FR{}", "CH": "CHE-{}", "US": None}[country]
        return {"name": name, "address": address, "vat": vat.format(self.rng.randrange(100_000_000, 999_999_999)) if vat else None, "iban": None,
                "email": f"billing@{slug}.example", "terms": self.rng.choice(["net 14", "net 30", "net 30", "net 45"]), "currency": currency,
                "rates": rates, "lang": lang, "prefix": prefix, "tag": "vendor_unknown", "id": None, "unseen": (name, country, address, prefix) in EVAL_VENDORS}

    def number(self, prefix: str) -> str:
        while True:
            width = self.rng.choice((4, 5))
            value = f"{prefix}{self.rng.randrange(10 ** (width - 1), 10 ** width)}"
            if value not in self.used and all(value.upper() != i["invoice_number"].upper() for i in self.ledger["invoices"]):
                self.used.add(value)
                return value

    # -- what it bills ------------------------------------------------------------------
    def random_lines(self, lang: str, count: int) -> list[dict[str, Any]]:
        return [{"description": d, "quantity": self.rng.randint(1, 12), "unit": p} for d, p in self.rng.sample(ITEMS[lang], count)]

    def lines_for_order(self, order: dict[str, Any], lang: str) -> list[dict[str, Any]]:
        """Lines that add up to the order's net total: the order's own lines, split deliveries, or
        a few catalogue lines plus a balancing service line."""
        own = [{"description": l["description"], "quantity": int(l["quantity"]), "unit": cents(l["unit_price"])} for l in self.ledger["lines"] if l["po_number"] == order["po_number"]]
        roll, target = self.rng.random(), cents(order["net_total"])
        if roll < 0.45:
            return own
        if roll < 0.7 and own and own[0]["quantity"] >= 4:
            first, cut = own[0], self.rng.randrange(1, own[0]["quantity"])
            return [{**first, "description": f"{first['description'][:38]}, lot 1", "quantity": cut},
                    {**first, "description": f"{first['description'][:38]}, lot 2", "quantity": first["quantity"] - cut}] + own[1:]
        while True:
            lines = self.random_lines(lang, self.rng.randint(1, 3))
            rest = target - sum(l["quantity"] * l["unit"] for l in lines)
            if rest > 100:
                return lines + [{"description": BALANCING[lang], "quantity": 1, "unit": rest}]

    # -- one case -----------------------------------------------------------------------
    def case(self) -> tuple[Doc, str, dict[str, Any]]:
        rng = self.rng
        flaw = rng.choices([f for f, _ in SCENARIOS], [w for _, w in SCENARIOS])[0]
        po_tag, order, banner = "none", None, None
        if flaw == "blocked_vendor":
            vendor = self.ledger_vendor(rng.choice(self.blocked))
        elif flaw == "inactive_vendor":
            vendor = self.ledger_vendor(rng.choice(self.inactive))
        elif flaw == "unknown_vendor" or (flaw in ("arithmetic_lines", "arithmetic_total", "no_invoice_number") and rng.random() < 0.5):
            vendor = self.unknown_vendor()
        elif flaw == "duplicate":
            prior = rng.choice(self.ledger["invoices"])
            vendor = self.ledger_vendor(next(v for v in self.ledger["vendors"] if v["vendor_id"] == prior["vendor_id"]))
            order = next((o for o in self.ledger["orders"] if o["po_number"] == prior["po_number"]), None)
            banner = rng.choice([None, "COPY", "REMINDER"])
        else:
            order = rng.choice(self.open_orders)
            vendor = self.ledger_vendor(next(v for v in self.active if v["vendor_id"] == order["vendor_id"]))
        lang = vendor["lang"]
        rate = vendor["rates"][0] if order else rng.choice(vendor["rates"])  # a purchase order's invoice bears the standard rate
        if order is not None:
            lines, po_tag = self.lines_for_order(order, lang), "match"
        else:
            lines = self.random_lines(lang, rng.randint(1, 4))
        number = prior["invoice_number"] if flaw == "duplicate" else self.number(vendor["prefix"])
        purchase_order = order["po_number"] if order is not None and flaw != "no_po" else None
        if flaw == "unknown_vendor" and rng.random() < 0.5:
            purchase_order, po_tag = f"PO-{rng.randrange(8000, 9999)}", "not_in_ledger"
        if flaw == "po_mismatch":
            purchase_order, po_tag, lines = self.mismatched_order(vendor, lines, lang)
        if flaw == "no_po":
            po_tag = "none"
        issued = date(2026, 9, 1) + timedelta(days=rng.randrange(90))
        if flaw == "duplicate":
            issued = date.fromisoformat(prior["invoice_date"])
        days = int(vendor["terms"].split()[-1])
        due = None if flaw == "no_due_date" else issued + timedelta(days=150 if flaw == "due_date_late" else days)
        subtotal = sum(l["quantity"] * l["unit"] for l in lines)
        if flaw == "arithmetic_lines":
            subtotal += rng.choice([lines[0]["quantity"] * lines[0]["unit"] // 10 or 500, 1000, 10000, -900, 9])
        tax = round(subtotal * rate)
        total = subtotal + tax
        if flaw == "arithmetic_total":
            total += rng.choice([1000, 10000, -tax // 2 or 1000, 90])
        doc = Doc(
            vendor=vendor["name"], address=vendor["address"], vat=vendor["vat"], iban=vendor["iban"],
            email=vendor["email"], invoice_number=None if flaw == "no_invoice_number" else number, invoice_date=issued, due_date=due,
            purchase_order=purchase_order, currency=vendor["currency"],
            lines=[{"description": l["description"][:48], "quantity": float(l["quantity"]), "unit_price": l["unit"] / 100, "amount": l["quantity"] * l["unit"] / 100} for l in lines],
            subtotal=subtotal / 100, tax_rate=rate, tax=None if rate == 0 and rng.random() < 0.5 else tax / 100, total=total / 100,
            terms=vendor["terms"], banner=banner,
        )
        return doc, flaw, {"vendor": vendor, "po": po_tag, "lang": lang}

    def mismatched_order(self, vendor: dict[str, Any], lines: list[dict[str, Any]], lang: str) -> tuple[str, str, list[dict[str, Any]]]:
        """A purchase order that will not match: closed, another vendor's, not in the ledger, or a partial delivery."""
        rng = self.rng
        others = [o for o in self.ledger["orders"] if o["vendor_id"] != vendor["id"]]
        closed = [o for o in self.ledger["orders"] if o["vendor_id"] == vendor["id"] and o["status"] not in ("open", "partially_invoiced")]
        kind = rng.choice(["partial", "other_vendor", "not_in_ledger"] + (["closed"] if closed else []))
        if kind == "partial":  # the order's number, but not all of it delivered: the subtotal differs
            order = next(o["po_number"] for o in self.open_orders if o["vendor_id"] == vendor["id"])
            if len(lines) > 1:
                return order, "partial", lines[:-1]
            if lines[0]["quantity"] > 1:
                return order, "partial", [{**lines[0], "quantity": lines[0]["quantity"] // 2}]
            return order, "partial", lines + self.random_lines(lang, 1)
        if kind == "other_vendor":
            return rng.choice(others)["po_number"], "other_vendor", lines
        if kind == "closed":
            return rng.choice(closed)["po_number"], "closed", lines
        return f"PO-{rng.randrange(8000, 9999)}", "not_in_ledger", lines


def style_for(rng: random.Random, split: str, lang: str, flaw: str) -> tuple[str, Style]:
    if split == "eval" and rng.random() < 0.3:
        layout = rng.choice(EVAL_ONLY_LAYOUTS)
    elif lang in ("de", "fr") and rng.random() < 0.7:
        layout = "german" if lang == "de" else "french"
    else:
        layout = rng.choice(["labels", "labels", "columns", "letter"] + (["receipt", "receipt"] if flaw in ("no_po", "no_invoice_number", "unknown_vendor", "arithmetic_total") else []))
    printed = LANGUAGE.get(layout, "en")
    numbers = {"de": ("de", "de", "de", "plain"), "fr": ("fr", "fr", "fr", "plain")}.get(printed, ("en", "en", "en", "plain"))
    dates = {"de": ("de_long", "de_num"), "fr": ("fr_long", "dmy")}.get(printed, ("iso", "dmy", "dmy_long", "mdy_long", "d_mon_y"))
    return layout, Style(numbers=rng.choice(numbers), dates=rng.choice(dates), ocr=rng.random() < (0.3 if split == "eval" else 0.25), rng=rng)


def extraction(doc: Doc) -> dict[str, Any]:
    from flotilla.agents.document_triage.schemas import Invoice

    invoice = {
        "vendor": doc.vendor, "invoice_number": doc.invoice_number, "invoice_date": doc.invoice_date.isoformat(),
        "due_date": doc.due_date.isoformat() if doc.due_date else None, "purchase_order": doc.purchase_order, "currency": doc.currency,
        "line_items": [{"description": l["description"], "quantity": l["quantity"], "unit_price": l["unit_price"], "amount": l["amount"]} for l in doc.lines],
        "subtotal": doc.subtotal, "tax": doc.tax, "total": doc.total,
    }
    return Invoice.model_validate(invoice).model_dump(mode="json")  # the schema the extract agent answers in


def build_split(ledger: dict[str, Any], split: str, count: int, seed: int, used: set[str], seen_inputs: set[str]) -> list[dict[str, Any]]:
    rng, cases = random.Random(seed), []
    builder = Builder(ledger, rng, split, used)
    while len(cases) < count:
        doc, flaw, info = builder.case()
        layout, style = style_for(rng, split, info["lang"], flaw)
        if layout == "receipt":
            doc.due_date = None  # a till receipt prints no due date; the truth follows the print
        text = render(layout, doc, style)
        if text in seen_inputs:
            continue
        seen_inputs.add(text)
        tags = [f"layout:{layout}", f"lang:{LANGUAGE.get(layout, 'en')}", f"currency:{doc.currency}", f"numbers:{style.numbers}", f"dates:{style.dates}",
                f"noise:{'ocr' if style.ocr else 'clean'}", f"flaw:{flaw}", f"ledger:{info['vendor']['tag']}", f"po:{info['po']}"]
        if layout in EVAL_ONLY_LAYOUTS:
            tags.append("unseen:layout")
        if info["vendor"].get("unseen"):
            tags.append("unseen:vendor")
        cases.append({"id": f"inv-{split}-{len(cases) + 1:04d}", "input": text, "expected": {"extract": extraction(doc)}, "tags": tags})
    return cases


async def label_decisions(cases: list[dict[str, Any]]) -> None:
    """The built-in policy's decision for each case, from the workflow's own tool and function nodes."""
    from opentelemetry.trace import NoOpTracer

    from flotilla.agents.document_triage.triage import analyze_invoice, decide_invoice
    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.tool_node import tool_node
    from flotilla.tools import PinStore, StdioServerConfig, ToolHub

    spec = load_workflow(WORKFLOW)
    with tempfile.TemporaryDirectory(prefix="flotilla-dataset-") as tmp:
        # The ledger server as flotilla.yaml's default entry starts it (seed data in a private database).
        servers = {"ledger": StdioServerConfig(command=sys.executable, args=["-m", "flotilla.mcp_servers.ledger"])}
        hub = ToolHub(servers, pins=PinStore(Path(tmp) / "mcp.lock.json"))
        try:
            nodes = [(name, tool_node(name, agent, hub, NoOpTracer(), workflow=spec.name)) for name, agent in spec.agents.items() if agent.tool]
            for case in cases:
                state: dict[str, Any] = {"input": case["input"], "outputs": {"extract": case["expected"]["extract"]}}
                for _, node in nodes:
                    state["outputs"].update((await node(state))["outputs"])
                state["outputs"]["analyze"] = analyze_invoice(state).model_dump(mode="json")
                decision = decide_invoice(state).decision.value
                case["expected"]["decide"] = {"decision": decision}
                case["tags"].append(f"decision:{decision}")
        finally:
            await hub.aclose()


def generate(out: Path, sizes: dict[str, int] | None = None) -> dict[str, list[dict[str, Any]]]:
    ledger, used, seen = load_ledger(), set(), set()
    splits = {name: build_split(ledger, name, (sizes or {}).get(name, count), seed, used, seen) for name, (count, seed) in SPLITS.items()}
    asyncio.run(label_decisions([case for cases in splits.values() for case in cases]))
    out.mkdir(parents=True, exist_ok=True)
    for name, cases in splits.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
            for case in cases:
                fh.write(json.dumps(case, ensure_ascii=False) + "\n")
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory for train.jsonl and eval.jsonl (default: beside this script)")
    args = parser.parse_args()
    splits = generate(args.out)
    for name, cases in splits.items():
        decisions = Counter(c["expected"]["decide"]["decision"] for c in cases)
        layouts = Counter(t.split(":", 1)[1] for c in cases for t in c["tags"] if t.startswith("layout:"))
        print(f"{name}: {len(cases)} cases -> {args.out / (name + '.jsonl')}; decisions {dict(sorted(decisions.items()))}; layouts {dict(sorted(layouts.items()))}")


if __name__ == "__main__":
    main()
