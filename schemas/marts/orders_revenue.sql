-- Revenue booked by one delivery day, by currency: the orders whose events were delivered on dt, each
-- event at the version the factory accepted (its earliest delivery's, as bronze keeps it: a different
-- version delivered on dt is a conflicting duplicate and does not count; an identical redelivery does),
-- each order at its greatest such version delivered on dt, by (updated_at, event_id).
--   orders       orders delivered on dt
--   paid_orders  of them, at status paid, shipped or delivered
--   revenue      their amounts (exact decimals)
--   refunded     amounts of the orders at status refunded
-- It reads every orders partition up to dt: an earlier day restated can change which version of an
-- event delivered on dt was accepted.
-- grain: dt
-- upstream: orders[all:0]
-- check: error unique(dt, currency)
-- check: error not_null(currency, orders, paid_orders, revenue, refunded)
-- check: warn row_count_change(1.0)
-- assert: error amounts_are_not_negative: SELECT * FROM this WHERE revenue < 0 OR refunded < 0
WITH accepted AS (  -- every event's first delivery: the version bronze keeps
    SELECT event_id, _content_hash FROM orders
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _delivery_key) = 1
),
delivered_today AS (
    SELECT o.* FROM orders o JOIN accepted a ON o.event_id = a.event_id AND o._content_hash = a._content_hash
    WHERE o.dt = $dt::DATE
    QUALIFY row_number() OVER (PARTITION BY o.event_id ORDER BY o._delivery_key) = 1
),
current_state AS (
    SELECT * FROM delivered_today
    QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY updated_at DESC, event_id DESC) = 1
)
SELECT $dt::DATE AS dt, currency,
       count(*) AS orders,
       count(*) FILTER (WHERE status IN ('paid', 'shipped', 'delivered')) AS paid_orders,
       CAST(coalesce(sum(amount) FILTER (WHERE status IN ('paid', 'shipped', 'delivered')), 0) AS DECIMAL(18, 2))
           AS revenue,
       CAST(coalesce(sum(amount) FILTER (WHERE status = 'refunded'), 0) AS DECIMAL(18, 2)) AS refunded
FROM current_state
GROUP BY currency
ORDER BY currency
