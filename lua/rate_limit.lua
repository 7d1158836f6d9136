--[[
  rate_limit: one request against one or more limits of `count` per `period` at once,
  by GCRA (the generic cell rate algorithm: a token bucket kept as one timestamp).
  Shared by every API process, so the limits hold across processes. The request is
  counted in every bucket only when every bucket allows it: a refusal consumes nothing.
  (On Redis Cluster each bucket has its own hash tag, so the caller passes one bucket
  per call there. On a single server the API passes the buckets to reserve instead,
  which checks them the same way, includes/gcra.lua, before its own first step.)

  KEYS[1..n]     the buckets; KEYS[i] is bucket i: a string holding its theoretical
                 arrival time (ms); it expires when the bucket is full again, so idle
                 callers cost no memory
  ARGV[1]        now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2i]       interval_ms  of bucket i: period / count, the time one request "costs"
  ARGV[2i+1]     burst        of bucket i: count, how many requests may arrive at once

  Returns {code, retry_after_ms, refusing bucket indexes...}
    0   OK                allowed, and counted in every bucket: {0, 0}
   -22  rate_limited      refused, counted in none: {-22, ms, i, ...} names the refusing
                          buckets i, ... (1-based); the caller may retry after ms
   -20  invalid_argument  an interval, burst or count of ARGV that is wrong: {-20, 0}
  Emits: nothing (not inventory state).
]]
--- @include "codes"
--- @include "clock"
--- @include "gcra"

if #KEYS == 0 or #ARGV ~= 1 + 2 * #KEYS then
  return {E_INVALID_ARGUMENT, 0}
end
local refused = take_rate_limits(now_ms(ARGV[1]), 0, 1, #KEYS)
if refused == false then
  return {E_INVALID_ARGUMENT, 0}
end
if refused then
  return {E_RATE_LIMITED, unpack(refused)}
end
return {OK, 0}
