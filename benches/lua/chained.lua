-- chained: create an order; the orders service first asks the users
-- service whether user 1 exists (a cross-service call), then writes.
wrk.method = "POST"
wrk.body = '{"user_id":1}'
wrk.headers["content-type"] = "application/json"
