-- Seed data of the bundled `ledger` MCP server: the buyer (Contoso Manufacturing GmbH)'s
-- vendor master, purchase orders, received invoices and payments. It matches the sample
-- supplier invoice at graphs/samples/invoice.txt (Northwind, INV-2026-0412, PO-7781).

CREATE TABLE vendors (
  vendor_id      TEXT PRIMARY KEY,
  name           TEXT NOT NULL,
  vat_number     TEXT,
  iban           TEXT,
  country        TEXT NOT NULL,
  payment_terms  TEXT NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('active', 'blocked', 'inactive')),
  email          TEXT
);

CREATE TABLE purchase_orders (
  po_number     TEXT PRIMARY KEY,
  vendor_id     TEXT NOT NULL REFERENCES vendors(vendor_id),
  issued_on     TEXT NOT NULL,
  currency      TEXT NOT NULL,
  net_total     NUMERIC NOT NULL,
  status        TEXT NOT NULL CHECK (status IN ('open', 'partially_invoiced', 'closed', 'cancelled')),
  requester     TEXT NOT NULL
);

CREATE TABLE purchase_order_lines (
  po_number     TEXT NOT NULL REFERENCES purchase_orders(po_number),
  line_no       INTEGER NOT NULL,
  description   TEXT NOT NULL,
  quantity      NUMERIC NOT NULL,
  unit_price    NUMERIC NOT NULL,
  PRIMARY KEY (po_number, line_no)
);

CREATE TABLE invoices (
  invoice_number TEXT NOT NULL,
  vendor_id      TEXT NOT NULL REFERENCES vendors(vendor_id),
  po_number      TEXT REFERENCES purchase_orders(po_number),
  invoice_date   TEXT NOT NULL,
  currency       TEXT NOT NULL,
  gross_total    NUMERIC NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('received', 'approved', 'paid', 'rejected')),
  PRIMARY KEY (vendor_id, invoice_number)
);

CREATE TABLE payments (
  payment_id     TEXT PRIMARY KEY,
  vendor_id      TEXT NOT NULL REFERENCES vendors(vendor_id),
  invoice_number TEXT NOT NULL,
  paid_on        TEXT NOT NULL,
  currency       TEXT NOT NULL,
  amount         NUMERIC NOT NULL,
  method         TEXT NOT NULL,
  iban           TEXT
);

INSERT INTO vendors VALUES
  ('V-1001', 'Northwind Office Supplies Ltd.', 'GB284993106', 'GB33BUKB20201555555555', 'GB', 'net 30', 'active', 'billing@northwind-supplies.example'),
  ('V-1002', 'Fabrikam Industrial Parts AG', 'DE811907980', 'DE89370400440532013000', 'DE', 'net 45', 'active', 'ar@fabrikam.example'),
  ('V-1003', 'Tailspin Freight Services Ltd.', 'GB123456789', 'GB29NWBK60161331926819', 'GB', 'net 14', 'blocked', 'accounts@tailspin-freight.example'),
  ('V-1004', 'Northwind Traders (Retail) Ltd.', 'GB987654321', 'GB94BARC10201530093459', 'GB', 'net 30', 'inactive', 'info@northwind-traders.example');

INSERT INTO purchase_orders VALUES
  ('PO-7781', 'V-1001', '2026-10-20', 'GBP', 2279.00, 'open', 'Facilities — M. Keller'),
  ('PO-7702', 'V-1001', '2026-09-03', 'GBP', 1225.00, 'closed', 'Facilities — M. Keller'),
  ('PO-7790', 'V-1002', '2026-10-28', 'EUR', 18450.00, 'open', 'Production — S. Braun');

INSERT INTO purchase_order_lines VALUES
  ('PO-7781', 1, 'A4 copier paper, 80 gsm (box of 5)', 40, 24.50),
  ('PO-7781', 2, 'Toner cartridge TN-2420 (black)', 12, 61.00),
  ('PO-7781', 3, 'Ergonomic office chair, model K2', 3, 189.00),
  ('PO-7702', 1, 'A4 copier paper, 80 gsm (box of 5)', 50, 24.50),
  ('PO-7790', 1, 'Hydraulic valve assembly HV-220', 30, 615.00);

INSERT INTO invoices VALUES
  ('INV-2026-0377', 'V-1001', 'PO-7702', '2026-09-15', 'GBP', 1470.00, 'paid'),
  ('FAB-55120',     'V-1002', 'PO-7790', '2026-11-05', 'EUR', 21955.50, 'received');

INSERT INTO payments VALUES
  ('PAY-30121', 'V-1001', 'INV-2026-0377', '2026-10-14', 'GBP', 1470.00, 'bank transfer', 'GB33BUKB20201555555555');
