-- wrk script of bench/login_storm.py: a storm of failed sign-ins on POST /admin/login (or of
-- guessed license keys on POST /api/v1/verify, below).
--
-- Every request is a form POST of `email` and a wrong `password`, with the `Origin` the admin
-- pages require (BENCH_ORIGIN). One request in BENCH_STAFF_EVERY is for the real staff account
-- (BENCH_STAFF_EMAIL); the others are for an email no account has, a new one each time, so the
-- per-account throttle never stops them (a password-spraying / credential-stuffing run).
--
-- BENCH_SPREAD=1: each request carries a new X-Forwarded-For address (the server trusts
-- 127.0.0.1 as a proxy), so the per-IP throttle never stops them either and every request for
-- an unknown email reaches Argon2id. BENCH_SPREAD=0: all from one address (BENCH_ONE_IP), which
-- the per-IP throttle (5 per minute) stops after five.
--
-- BENCH_TARGET=verify: instead, a key-guessing storm on POST /api/v1/verify from BENCH_ONE_IP,
-- a new unknown key in every request: the unknown-key budget (10 per minute per address)
-- answers "invalid" ten times, then 429.
--
-- done() prints one line per HTTP status: "status <code> <count>" (summed over the threads).

local origin = os.getenv("BENCH_ORIGIN") or error("BENCH_ORIGIN is not set")
local staff_email = os.getenv("BENCH_STAFF_EMAIL") or error("BENCH_STAFF_EMAIL is not set")
local staff_every = tonumber(os.getenv("BENCH_STAFF_EVERY") or "4")
local spread = os.getenv("BENCH_SPREAD") == "1"
local one_ip = os.getenv("BENCH_ONE_IP") or "203.0.113.7"
local guess_keys = os.getenv("BENCH_TARGET") == "verify"

local threads = {}

function setup(thread)
   thread:set("id", #threads + 1)
   threads[#threads + 1] = thread
end

counts = {} -- global: done() reads it from each thread with thread:get
local sent = 0

function init(args)
   counts = {}
   sent = 0
end

local function urlencode(text)
   return (text:gsub("[^%w%-%._~]", function(c)
      return string.format("%%%02X", string.byte(c))
   end))
end

function request()
   sent = sent + 1
   if guess_keys then
      local body = string.format(
         "license_key=GUESS-%d-%d&domain=guess.example.com&nonce=storm-nonce-0123456789", id, sent
      )
      return wrk.format("POST", nil, {
         ["Content-Type"] = "application/x-www-form-urlencoded",
         ["X-Forwarded-For"] = one_ip,
      }, body)
   end
   local email
   if sent % staff_every == 0 then
      email = staff_email
   else
      email = string.format("nobody-%d-%d@storm.example.com", id, sent)
   end
   local ip = one_ip
   if spread then
      -- 10.<thread>.<n / 256>.<n % 256>: a new address per request (65,536 per thread).
      ip = string.format("10.%d.%d.%d", id % 256, math.floor(sent / 256) % 256, sent % 256)
   end
   local body = "email=" .. urlencode(email) .. "&password=" .. urlencode("Wrong-Pass-" .. sent .. "!")
   local headers = {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["Origin"] = origin,
      ["X-Forwarded-For"] = ip,
   }
   return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("counts")) do
         total[status] = (total[status] or 0) + n
      end
   end
   for status, n in pairs(total) do
      io.write(string.format("status %d %d\n", status, n))
   end
end
