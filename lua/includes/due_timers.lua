--[[
  due_timers: run timers that are due: a hold past its deadline expires, a waiting
  unit whose delay is over returns to the pool (and so to the schedule's waitlist).

  Provides:
    run_timer(step, slot, kind, id, due) -> 1 if it changed state, else 0 (a stale
                                            index entry, dropped)
    reclaim_slot(step, slot, limit) -> changed   reserve's reclaim: the slot's due timers
                                                 at the step's clock, oldest first, at
                                                 most `limit`
  Expects: tag (K_SLOTS, K_SLOT_TIMERS), a step from step.lua, timers,
    holds (load_hold), end_hold, events (emit), waitlist (offer_free_units).
]]
--- @include "tag"
--- @include "step"
--- @include "timers"
--- @include "holds"
--- @include "end_hold"
--- @include "events"
--- @include "waitlist"

-- A waiting unit whose delay is over returns to the pool, where the schedule's
-- waitlist has it first.
local function return_waiting_unit(step, slot, id, due)
  remove_timer(slot, 'w', id, due)
  redis.call('HINCRBY', K_SLOTS, slot .. ':wait', -1)
  redis.call('HINCRBY', K_SLOTS, slot .. ':rem', 1)
  emit(step, 'unit_returned', {'hold', id}, slot)
  offer_free_units(step, slot)
end

-- Runs one due timer; returns 1 if it changed state.
local function run_timer(step, slot, kind, id, due)
  if kind == 'w' then
    return_waiting_unit(step, slot, id, due)
    return 1
  end
  local rec = load_hold(id)
  if rec and rec.state == 'held' and rec.deadline <= step.now then
    end_hold(step, rec, 'expired', 'deadline')
    return 1
  end
  -- A stale index entry (the hold already ended): drop it, no state change.
  remove_timer(slot, kind, id, due)
  return 0
end

-- Reserve's reclaim: due timers of one slot, oldest first, at most `limit`.
local function reclaim_slot(step, slot, limit)
  local members = redis.call('ZRANGEBYLEX', K_SLOT_TIMERS, '[' .. slot .. '|',
    '(' .. slot .. '|' .. pad_due(step.now + 1), 'LIMIT', 0, limit)
  local changed = 0
  for _, m in ipairs(members) do
    local _, due, kind, id = string.match(m, '^(.-)|(%d+)|(%a)|(.+)$')
    changed = changed + run_timer(step, slot, kind, id, tonumber(due))
  end
  return changed
end
