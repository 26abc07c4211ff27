-- wrk script of bench/verify.py: POSTs form bodies read from the file named by the
-- BENCH_BODIES environment variable, one urlencoded body per line.
--
-- One body: a static request (wrk builds it once), as cheap for wrk as a plain `wrk -s`.
-- Several bodies: request() cycles through them, pre-formatted in init() so that each
-- request costs wrk one table lookup.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local path = os.getenv("BENCH_BODIES")
if not path then
   error("BENCH_BODIES must name a file of request bodies, one per line")
end
local bodies = {}
for line in io.lines(path) do
   if #line > 0 then
      bodies[#bodies + 1] = line
   end
end
if #bodies == 0 then
   error("no request bodies in " .. path)
end

if #bodies == 1 then
   wrk.body = bodies[1]
else
   local requests = {}
   local next_index = 0

   function init(args)
      for i, body in ipairs(bodies) do
         requests[i] = wrk.format(nil, nil, nil, body)
      end
      -- Each thread has its own Lua state; start them at different places in the list.
      next_index = math.random(#requests) - 1
   end

   function request()
      next_index = next_index % #requests + 1
      return requests[next_index]
   end
end
