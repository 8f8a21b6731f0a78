-- `make bench`, the many-tenant shape: each request carries the next key of the list in
-- BENCH_KEYS_FILE (one secret a line), round robin.
local keys = {}
for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do
  if #line > 0 then keys[#keys + 1] = line end
end
local next_key = 0

request = function()
  next_key = next_key % #keys + 1
  wrk.headers["Authorization"] = "Bearer " .. keys[next_key]
  return wrk.format(nil)
end
