--[[
  slots: a slot's counts (remaining, held, booked, waiting, capacity).

  Provides:
    slot_counts(slot) -> {rem, held, booked, wait, cap}   read from the slots hash
    counts_array(c) -> {rem, held, booked, wait, cap}     as a reply's array part
  Expects: tag (K_SLOTS).
]]
--- @include "tag"

local function slot_counts(slot)
  local v = redis.call('HMGET', K_SLOTS, slot .. ':rem', slot .. ':held', slot .. ':booked',
    slot .. ':wait', slot .. ':cap')
  return {
    rem = tonumber(v[1]) or 0, held = tonumber(v[2]) or 0, booked = tonumber(v[3]) or 0,
    wait = tonumber(v[4]) or 0, cap = tonumber(v[5]) or 0,
  }
end

local function counts_array(c)
  return {c.rem, c.held, c.booked, c.wait, c.cap}
end
