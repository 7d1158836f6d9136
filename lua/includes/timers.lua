--[[
  timers: a slot's due timers, kept in both indexes (see tag.lua, KEYS[6] and KEYS[7]).

  Provides:
    pad_due(ms) -> string                   a due time as 15 digits (sorts by ZRANGEBYLEX)
    add_timer(slot, kind, id, due)          kind "h" (a hold's deadline) or "w" (a waiting unit)
    remove_timer(slot, kind, id, due)
  Expects: tag (K_TIMERS, K_SLOT_TIMERS).
]]
--- @include "tag"

local function pad_due(ms)
  return string.format('%015d', ms)
end

local function add_timer(slot, kind, id, due)
  redis.call('ZADD', K_TIMERS, due, slot .. '|' .. kind .. '|' .. id)
  redis.call('ZADD', K_SLOT_TIMERS, 0, slot .. '|' .. pad_due(due) .. '|' .. kind .. '|' .. id)
end

local function remove_timer(slot, kind, id, due)
  redis.call('ZREM', K_TIMERS, slot .. '|' .. kind .. '|' .. id)
  redis.call('ZREM', K_SLOT_TIMERS, slot .. '|' .. pad_due(due) .. '|' .. kind .. '|' .. id)
end
