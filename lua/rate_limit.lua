--[[
  rate_limit: one request against one or more limits of `count` per `period` at once,
  by GCRA (the generic cell rate algorithm: a token bucket kept as one timestamp).
  Shared by every API process, so the limits hold across processes. The request is
  counted in every bucket only when every bucket allows it: a refusal consumes nothing.
  (On Redis Cluster each bucket has its own hash tag, so the caller passes one bucket
  per call there.)

  KEYS[1..n]     the buckets; KEYS[i] is bucket i: a string holding its theoretical
                 arrival time (ms); it expires when the bucket is full again, so idle
                 callers cost no memory
  ARGV[1]        now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2i]       interval_ms  of bucket i: period / count, the time one request "costs"
  ARGV[2i+1]     burst        of bucket i: count, how many requests may arrive at once

  Returns {allowed, retry_after_ms, refusing bucket indexes...}
    {1, 0}          allowed (and counted in every bucket)
    {0, ms, i, ...} refused by buckets i, ... (1-based); the caller may retry after ms
    {-20, 0}        invalid_argument (an interval, burst or count of ARGV that is wrong)
  Emits: nothing (not inventory state).
]]
--- @include "codes"
--- @include "clock"

if #KEYS == 0 or #ARGV ~= 1 + 2 * #KEYS then
  return {E_INVALID_ARGUMENT, 0}
end
local now = now_ms(ARGV[1])
local new_tats = {}
local refused = {0, 0}
for i = 1, #KEYS do
  local interval, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if not interval or not burst or interval <= 0 or burst < 1 then
    return {E_INVALID_ARGUMENT, 0}
  end
  local tat = math.max(tonumber(redis.call('GET', KEYS[i])) or now, now)
  local allow_at = tat + interval - burst * interval
  if now < allow_at then
    refused[2] = math.max(refused[2], math.ceil(allow_at - now))
    refused[#refused + 1] = i
  end
  new_tats[i] = tat + interval
end
if #refused > 2 then
  return refused
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], new_tats[i], 'PX', math.max(1, math.ceil(new_tats[i] - now)))
end
return {1, 0}
