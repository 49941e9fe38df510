-- migrate:up
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  customer text NOT NULL,
  cents integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE orders;
