-- `make bench`, the many-tenant shape: each request carries the next key of the list in
-- BENCH_KEYS_FILE (one secret a line), round robin. The requests are formatted once, when
-- the thread starts: wrk shares the machine's cores with the server, so formatting each
-- request anew would charge the load generator's work to this shape alone.
local keys = {}
for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do
  if #line > 0 then keys[#keys + 1] = line end
end
local requests = {}
local next_request = 0

init = function(args)
  for i, key in ipairs(keys) do
    wrk.headers["Authorization"] = "Bearer " .. key
    requests[i] = wrk.format(nil)
  end
end

request = function()
  next_request = next_request % #requests + 1
  return requests[next_request]
end
