-- migrate:up
-- the amount in currency units, filled in by the backfill step
ALTER TABLE orders ADD COLUMN amount numeric(12,2);
CREATE INDEX orders_customer ON order_lines (customer);

-- migrate:down
ALTER TABLE orders DROP COLUMN amount;
