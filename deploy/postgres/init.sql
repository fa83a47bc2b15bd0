-- Run once by the postgres image when its volume is empty (/docker-entrypoint-initdb.d/).
-- The table the `orders-db` trigger (deploy/project/triggers/orders-db.toml) streams; the
-- trigger creates its publication and replication slot itself. The role `sluice`
-- (POSTGRES_USER) is the superuser the image creates, so it may replicate and publish.
CREATE TABLE public.orders (
    id         bigserial PRIMARY KEY,
    customer   text           NOT NULL,
    total      numeric(10, 2) NOT NULL,
    paid       boolean        NOT NULL DEFAULT false,
    placed_at  timestamptz    NOT NULL DEFAULT now()
);
-- Whole old rows in update and delete events.
ALTER TABLE public.orders REPLICA IDENTITY FULL;
