-- write: create a user; the 201 comes only once the record is on disk.
wrk.method = "POST"
wrk.body = '{"name":"Bench"}'
wrk.headers["content-type"] = "application/json"
