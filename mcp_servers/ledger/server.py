"""The `ledger` MCP server: read-only queries over vendors, purchase orders, invoices, payments.

Every query tool is annotated read-only and idempotent, so flotilla's pool may repeat a call
after a dropped connection. Amounts are decimals as strings-free JSON numbers (2 dp).
`writable=True` (`--writable`) adds the write tools of writes.py (`record_decision`), which honour
idempotency keys; without it the server stays read-only and its tool list unchanged.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from flotilla.mcp_servers.ledger.db import connect_read_only

__all__ = ["build_server"]

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, destructive_hint=False, open_world_hint=False)


def _normalise_id(value: str) -> str:
    """VAT numbers and IBANs are compared without spaces and case (`GB 284 9931 06` = `GB284993106`)."""
    return "".join(value.split()).upper()


def _rows(conn: sqlite3.Connection, sql: str, *params: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(sql, params).fetchall()]


def build_server(db_path: Path, *, writable: bool = False) -> MCPServer:
    conn = connect_read_only(db_path)
    server = MCPServer(
        name="ledger",
        instructions=(
            "Accounts-payable ledger: vendors, purchase orders, received invoices, payments"
            + ("; records triage decisions (writes honour idempotency keys)." if writable else " (read-only).")
        ),
        version="0.1.0",
        log_level="WARNING",
    )

    @server.tool(annotations=READ_ONLY)
    def find_vendor(name: str | None = None, vat_number: str | None = None, iban: str | None = None) -> dict[str, Any]:
        """Find vendors in the vendor master by (part of) their name, VAT number or IBAN.

        Returns each match with vendor_id, name, vat_number, iban, country, payment_terms and
        status (active / blocked / inactive). Give at least one of the three filters.
        """
        if not (name or vat_number or iban):
            raise ToolError("give at least one of name, vat_number or iban")
        clauses, params = [], []
        if name:
            clauses.append("lower(name) LIKE ?")
            params.append(f"%{name.strip().lower()}%")
        if vat_number:
            clauses.append("upper(replace(vat_number, ' ', '')) = ?")
            params.append(_normalise_id(vat_number))
        if iban:
            clauses.append("upper(replace(iban, ' ', '')) = ?")
            params.append(_normalise_id(iban))
        vendors = _rows(conn, f"SELECT * FROM vendors WHERE {' AND '.join(clauses)} ORDER BY vendor_id", *params)
        return {"vendors": vendors, "count": len(vendors)}

    @server.tool(annotations=READ_ONLY)
    def get_purchase_order(po_number: str) -> dict[str, Any]:
        """Get one purchase order by number (e.g. PO-7781): vendor, currency, net total, status and its lines."""
        found = _rows(conn, "SELECT * FROM purchase_orders WHERE upper(po_number) = ?", po_number.strip().upper())
        if not found:
            raise ToolError(f"no purchase order {po_number!r}")
        order = found[0]
        order["lines"] = _rows(
            conn,
            "SELECT line_no, description, quantity, unit_price, round(quantity * unit_price, 2) AS amount "
            "FROM purchase_order_lines WHERE po_number = ? ORDER BY line_no",
            order["po_number"],
        )
        order["vendor_name"] = conn.execute("SELECT name FROM vendors WHERE vendor_id = ?", (order["vendor_id"],)).fetchone()[0]
        return order

    @server.tool(annotations=READ_ONLY)
    def find_invoice(invoice_number: str, vendor_id: str | None = None) -> dict[str, Any]:
        """Look up invoices already received with this number (duplicate check), optionally for one vendor."""
        sql = "SELECT * FROM invoices WHERE upper(invoice_number) = ?"
        params: list[Any] = [invoice_number.strip().upper()]
        if vendor_id:
            sql += " AND vendor_id = ?"
            params.append(vendor_id.strip().upper())
        invoices = _rows(conn, sql, *params)
        return {"invoices": invoices, "count": len(invoices)}

    @server.tool(annotations=READ_ONLY)
    def list_payments(invoice_number: str | None = None, vendor: str | None = None) -> dict[str, Any]:
        """List payments made, filtered by invoice number and/or vendor (vendor_id like V-1001, or part of the name)."""
        if not (invoice_number or vendor):
            raise ToolError("give invoice_number, vendor, or both")
        sql = "SELECT p.*, v.name AS vendor_name FROM payments p JOIN vendors v USING (vendor_id) WHERE 1=1"
        params: list[Any] = []
        if invoice_number:
            sql += " AND upper(p.invoice_number) = ?"
            params.append(invoice_number.strip().upper())
        if vendor:
            sql += " AND (p.vendor_id = ? OR lower(v.name) LIKE ?)"
            params += [vendor.strip().upper(), f"%{vendor.strip().lower()}%"]
        payments = _rows(conn, sql + " ORDER BY paid_on", *params)
        total = round(sum(float(p["amount"]) for p in payments), 2)
        return {"payments": payments, "count": len(payments), "total_paid": total}

    if writable:
        from flotilla.mcp_servers.ledger.writes import add_write_tools

        add_write_tools(server, db_path)
    return server
