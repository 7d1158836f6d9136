--[[
  due_timers: run timers that are due: a hold past its deadline expires, a waiting
  unit whose delay is over returns to the pool.

  Provides:
    run_timer(slot, kind, id, due, now) -> 1 if it changed state, else 0 (a stale
                                           index entry, dropped)
    reclaim_slot(slot, now, limit) -> changed   reserve's reclaim: the slot's due timers,
                                                oldest first, at most `limit`
  Expects: tag (K_SLOTS, K_SLOT_TIMERS), timers, holds (load_hold), end_hold,
    events (emit).
]]
--- @include "tag"
--- @include "timers"
--- @include "holds"
--- @include "end_hold"
--- @include "events"

-- A waiting unit whose delay is over returns to the pool.
local function return_waiting_unit(slot, id, due, now)
  remove_timer(slot, 'w', id, due)
  redis.call('HINCRBY', K_SLOTS, slot .. ':wait', -1)
  redis.call('HINCRBY', K_SLOTS, slot .. ':rem', 1)
  return emit('unit_returned', now, {'hold', id}, slot)
end

-- Runs one due timer; returns 1 if it changed state.
local function run_timer(slot, kind, id, due, now)
  if kind == 'w' then
    return_waiting_unit(slot, id, due, now)
    return 1
  end
  local rec = load_hold(id)
  if rec and rec.state == 'held' and rec.deadline <= now then
    end_hold(rec, 'expired', now, 'deadline')
    return 1
  end
  -- A stale index entry (the hold already ended): drop it, no state change.
  remove_timer(slot, kind, id, due)
  return 0
end

-- Reserve's reclaim: due timers of one slot, oldest first, at most `limit`.
local function reclaim_slot(slot, now, limit)
  local members = redis.call('ZRANGEBYLEX', K_SLOT_TIMERS, '[' .. slot .. '|',
    '(' .. slot .. '|' .. pad_due(now + 1), 'LIMIT', 0, limit)
  local changed = 0
  for _, m in ipairs(members) do
    local _, due, kind, id = string.match(m, '^(.-)|(%d+)|(%a)|(.+)$')
    changed = changed + run_timer(slot, kind, id, tonumber(due), now)
  end
  return changed
end
