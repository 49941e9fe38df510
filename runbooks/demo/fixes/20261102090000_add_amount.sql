-- migrate:up
-- the amount in currency units, filled in by the backfill step
ALTER TABLE orders ADD COLUMN amount numeric(12,2);
CREATE INDEX orders_customer ON orders (customer);

-- migrate:down
DROP INDEX orders_customer;
ALTER TABLE orders DROP COLUMN amount;
