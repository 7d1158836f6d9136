--[[
  rate_limit: one request against a limit of `count` per `period`, by GCRA (the
  generic cell rate algorithm: a token bucket kept as one timestamp). Shared by every
  API process, so the limit holds across processes.

  KEYS[1]  the bucket: a string holding the theoretical arrival time (ms); it expires
           when the bucket is full again, so idle callers cost no memory
  ARGV[1]  now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2]  interval_ms  period / count: the time one request "costs"
  ARGV[3]  burst        count: how many requests may arrive at once

  Returns {allowed, retry_after_ms}
    {1, 0}   allowed (and counted)
    {0, ms}  refused; the caller may retry after ms
   -20 as allowed = invalid_argument
  Emits: nothing (not inventory state).
]]
--- @include "codes"
--- @include "clock"

local now = now_ms(ARGV[1])
local interval, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
if not interval or not burst or interval <= 0 or burst < 1 then
  return {E_INVALID_ARGUMENT, 0}
end
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local allow_at = tat + interval - burst * interval
if now < allow_at then
  return {0, math.ceil(allow_at - now)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, 0}
