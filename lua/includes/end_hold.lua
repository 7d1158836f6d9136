--[[
  end_hold: end an open hold or booking and free its unit, to the pool at once or
  through the tag's anti-scalping wait; a unit back in the pool goes to the schedule's
  waitlist first, in the same step (waitlist.lua).

  Provides:
    free_unit(step, slot, id) -> waits       the unit returns now (waits = false), or
                                             waits a random delay within the tag's
                                             rerelease window (counted in `wait`
                                             meanwhile, with a "w" timer; waits = true)
    end_hold(step, rec, new_state, reason) -> event_id, json, counts
                                             new_state: expired, released or cancelled;
                                             counts are the slot's as the hold's event
                                             carries them (before any waitlist offer the
                                             freed unit then made, each its own event)
  Expects: tag (K_SLOTS), meta (policy_number), a step from step.lua (its clock and
    random numbers), timers, holds (save_hold), patient_holds, events (emit_hold),
    waitlist.
]]
--- @include "tag"
--- @include "meta"
--- @include "step"
--- @include "timers"
--- @include "holds"
--- @include "patient_holds"
--- @include "events"
--- @include "waitlist"

-- A freed unit goes back to the pool at once, or, when the tag's anti-scalping window
-- is set, waits a random delay within it (counted in `wait` meanwhile).
local function free_unit(step, slot, id)
  local lo = policy_number('rerelease_min_ms')
  local hi = policy_number('rerelease_max_ms')
  if hi <= 0 then
    redis.call('HINCRBY', K_SLOTS, slot .. ':rem', 1)
    return false
  end
  if lo > hi then lo = hi end
  local delay = lo + (next_random(step) % (hi - lo + 1))
  redis.call('HINCRBY', K_SLOTS, slot .. ':wait', 1)
  add_timer(slot, 'w', id, step.now + delay)
  return true
end

local EVENT_FOR_END = {
  expired = 'hold_expired', released = 'hold_released', cancelled = 'booking_cancelled',
}

-- Ends an open hold or booking: its unit leaves `held` (or `booked`), the record
-- records how it ended, the patient index forgets it, and the unit is freed: an offer's
-- entry ends with it, and a unit back in the pool is offered to the waitlist.
-- Returns what emit_hold returns (the event's stream id, the record's JSON, the counts).
local function end_hold(step, rec, new_state, reason)
  local was = rec.state
  if was == 'held' then
    redis.call('HINCRBY', K_SLOTS, rec.slot .. ':held', -1)
    remove_timer(rec.slot, 'h', rec.id, rec.deadline)
  else
    redis.call('HINCRBY', K_SLOTS, rec.slot .. ':booked', -1)
  end
  rec.state = new_state
  rec.ended = step.now
  rec.reason = reason
  local json = save_hold(rec)
  remove_patient_hold(rec.patient, rec.id)
  local waits = free_unit(step, rec.slot, rec.id)
  local event_id, _, counts = emit_hold(step, EVENT_FOR_END[new_state], rec,
    {'from', was, 'reason', reason}, json)
  if rec.entry then
    end_offer_entry(step, rec, new_state)
  end
  if not waits then
    offer_free_units(step, rec.slot)
  end
  return event_id, json, counts
end
