-- Outbound: an order keeps what was ordered, line by line, so what is short stays a query
-- (ordered − tasks made) and every pick task says which line it serves. Reserved, picked
-- and shipped quantities stay where 003 puts them: reservations and movements.

CREATE TABLE order_lines (
    site       text NOT NULL,
    order_ref  text NOT NULL,
    line       int NOT NULL CHECK (line > 0),
    sku        text NOT NULL REFERENCES skus (code),
    lot        text NOT NULL DEFAULT '',  -- '' : any lot, by the SKU's pick policy
    quantity   numeric NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (site, order_ref, line),
    FOREIGN KEY (site, order_ref) REFERENCES orders (site, reference)
);

ALTER TABLE pick_tasks ADD COLUMN line int;
ALTER TABLE pick_tasks
    ADD FOREIGN KEY (site, order_ref, line) REFERENCES order_lines (site, order_ref, line);
CREATE INDEX pick_tasks_by_order ON pick_tasks (site, order_ref);
CREATE INDEX reservations_by_document ON reservations (document) WHERE state = 'open';
CREATE INDEX verifications_by_order ON verifications (site, order_ref, sku, lot, id)
    WHERE order_ref IS NOT NULL;
