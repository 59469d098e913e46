-- mixed: nine reads of an existing user for every write of a new one.
local n = 0
request = function()
  n = n + 1
  if n % 10 == 0 then
    return wrk.format("POST", "/users", { ["content-type"] = "application/json" },
      '{"name":"Bench"}')
  end
  return wrk.format("GET", "/users/" .. (n % 2 + 1))
end
