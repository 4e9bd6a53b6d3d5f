-- Revenue booked by one delivery day, by currency: the orders whose events were delivered on dt, each
-- at its greatest version in that delivery by (updated_at, event_id), each event once.
--   orders       orders delivered on dt
--   paid_orders  of them, at status paid, shipped or delivered
--   revenue      their amounts (exact decimals)
--   refunded     amounts of the orders at status refunded
-- grain: dt
-- upstream: orders
-- check: error unique(dt, currency)
-- check: error not_null(currency, orders, paid_orders, revenue, refunded)
-- check: warn row_count_change(1.0)
-- assert: error amounts_are_not_negative: SELECT * FROM this WHERE revenue < 0 OR refunded < 0
WITH events AS (
    SELECT DISTINCT ON (event_id) * FROM orders ORDER BY event_id
),
current_state AS (
    SELECT * FROM events
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
