--[[
  expire: sweep a bounded batch of due timers of one tag: holds past their deadline
  go back to the pool (or into the anti-scalping wait), and waiting units whose delay
  is over return to the pool. Reserve reclaims its own slot's due timers itself; this
  sweep catches the rest, so no correctness depends on keyspace notifications.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms     logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed  seeds the anti-scalping delay of the freed units
  ARGV[3]  limit      at most this many timers per call (a long script blocks Redis)

  Returns {code, changed, still_due}
    0   OK                changed = state changes made; still_due = due timers left
   -17  store_fenced
   -20  invalid_argument
  Emits: hold_expired and unit_returned, one per state change.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "due_timers"

local step = new_step(now_ms(ARGV[1]), ARGV[2])
local now = step.now
local limit = tonumber(ARGV[3])
if not limit or limit < 1 then
  return {E_INVALID_ARGUMENT, 0, 0}
end
if is_fenced() then
  return {E_STORE_FENCED, 0, 0}
end

local due = redis.call('ZRANGEBYSCORE', K_TIMERS, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local changed = 0
for i = 1, #due, 2 do
  local slot, kind, id = string.match(due[i], '^(.-)|(%a)|(.+)$')
  changed = changed + run_timer(step, slot, kind, id, tonumber(due[i + 1]))
end
return {OK, changed, redis.call('ZCOUNT', K_TIMERS, '-inf', now)}
