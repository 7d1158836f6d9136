--[[
  rebook: the new booking of a reschedule (改约) in its slot: the checks a reserve makes
  of the slot, and the write that books a unit at once (the payment is the old
  booking's, so there is no hold and no payment deadline).

  A rescheduled booking's record carries, besides a reserve's fields:
    from   the booking it replaced          moves  how many reschedules led to it
  and the booking it replaced, once ended: to = the new booking's id. During a move
  across tags the old booking carries moving = the new id and moving_until (ms): see
  reschedule_mark.lua.

  Provides:
    move_refusal(old_id, account, now, max_moves, force)
        -> nil, rec                 the booking may be moved
        -> code, rec, extra         hold_not_found, not_owner, hold_not_active (extra =
                                    its state), reschedule_in_progress (a move across
                                    tags is under way), cancel_deadline_passed (extra =
                                    the deadline), reschedule_limit (extra = max_moves);
                                    `force` (an operator's substitution) skips the last two
    rebook_refusal(now, slot, patient, replaced, max_amount)
        -> nil, schedule id, sched  the unit may be taken (sold out is checked apart)
        -> code, extra              a refusal: slot_not_found, schedule_not_found,
                                    schedule_suspended, not_released (extra = release
                                    ms), schedule_past, reschedule_fee_higher (extra =
                                    the fee), patient_rule (extra = "one_per_day";
                                    `replaced` does not count)
    unit_free(step, slot, limit) -> bool   a unit is free, after reclaiming due timers
    book_unit(step, new_id, old, slot, schedule, fee)
        -> event_id, json, counts, rec     the new booking, event booking_rescheduled
    hold_unit(step, new_id, old, slot, schedule, fee, deadline)
        -> event_id, json, counts, rec     a dearer target's unit held until deadline
                                           for the fee difference's payment (a charged
                                           move): event hold_created; confirm books it
  Expects: tag, codes, holds, schedules, meta (policy_number), patient_holds, timers,
    due_timers (reclaim_slot), events (emit_hold), a step from step.lua.
]]
--- @include "tag"
--- @include "codes"
--- @include "holds"
--- @include "schedules"
--- @include "meta"
--- @include "patient_holds"
--- @include "due_timers"
--- @include "timers"
--- @include "events"

local function move_refusal(old_id, account, now, max_moves, force)
  local rec = load_hold(old_id)
  if not rec then
    return E_HOLD_NOT_FOUND
  end
  if account ~= '' and rec.account ~= account then
    return E_NOT_OWNER
  end
  if rec.state ~= 'booked' then
    return E_HOLD_NOT_ACTIVE, rec, rec.state
  end
  if (rec.moving or '') ~= '' then
    return E_RESCHEDULE_IN_PROGRESS, rec
  end
  if not force then
    local sched = schedule_fields(rec.schedule)
    local deadline = sched and math.min(sched.cancel_deadline_ms, sched.start_ms) or 0
    if now > deadline then
      return E_CANCEL_DEADLINE_PASSED, rec, deadline
    end
    if (rec.moves or 0) >= max_moves then
      return E_RESCHEDULE_LIMIT, rec, max_moves
    end
  end
  return nil, rec
end

local function rebook_refusal(now, slot, patient, replaced, max_amount)
  local schedule = redis.call('HGET', K_SLOTS, slot .. ':sched')
  if not schedule then
    return E_SLOT_NOT_FOUND
  end
  local sched = schedule_fields(schedule)
  if not sched then
    return E_SCHEDULE_NOT_FOUND
  end
  if sched.status ~= 'open' then
    return E_SCHEDULE_SUSPENDED
  end
  if now < sched.release_ms then
    return E_NOT_RELEASED, sched.release_ms
  end
  if now >= sched.start_ms then
    return E_SCHEDULE_PAST
  end
  if max_amount >= 0 and sched.fee > max_amount then
    return E_RESCHEDULE_FEE_HIGHER, sched.fee
  end
  if policy_number('one_per_day') == 1 then
    for _, id in ipairs(patient_holds(patient)) do
      if id ~= replaced then
        local other = load_hold(id)
        if other and is_open(other, now) then
          return E_PATIENT_RULE, 'one_per_day'
        end
      end
    end
  end
  return nil, schedule, sched
end

local function unit_free(step, slot, limit)
  local remaining = tonumber(redis.call('HGET', K_SLOTS, slot .. ':rem')) or 0
  if remaining <= 0 and reclaim_slot(step, slot, limit) > 0 then
    remaining = tonumber(redis.call('HGET', K_SLOTS, slot .. ':rem')) or 0
  end
  return remaining > 0
end

local function book_unit(step, new_id, old, slot, schedule, fee)
  local now = step.now
  local rec = {
    id = new_id, slot = slot, schedule = schedule, account = old.account,
    patient = old.patient, channel = old.channel, fp = '', amount = fee, created = now,
    deadline = now, extended = 0, state = 'booked', payment_ref = old.payment_ref,
    confirmed = now, ended = 0, reason = '', from = old.id, moves = (old.moves or 0) + 1,
  }
  redis.call('HINCRBY', K_SLOTS, slot .. ':rem', -1)
  redis.call('HINCRBY', K_SLOTS, slot .. ':booked', 1)
  local json = save_hold(rec)
  add_patient_hold(rec.patient, new_id)
  local event_id, _, counts = emit_hold(step, 'booking_rescheduled', rec, {
    'from_booking', old.id, 'amount', fee, 'payment_ref', rec.payment_ref,
  }, json)
  return event_id, json, counts, rec
end

-- A charged move's new unit: a hold like a reserve's (its timer expires it at the
-- difference's payment deadline), that confirm books once the difference is paid. It
-- remembers the booking it replaces (from) and the move count like book_unit's booking;
-- its payment_ref stays empty until confirm sets the difference's payment.
local function hold_unit(step, new_id, old, slot, schedule, fee, deadline)
  local now = step.now
  local rec = {
    id = new_id, slot = slot, schedule = schedule, account = old.account,
    patient = old.patient, channel = old.channel, fp = '', amount = fee, created = now,
    deadline = deadline, extended = 1, state = 'held', payment_ref = '', confirmed = 0,
    ended = 0, reason = '', from = old.id, moves = (old.moves or 0) + 1,
  }
  redis.call('HINCRBY', K_SLOTS, slot .. ':rem', -1)
  redis.call('HINCRBY', K_SLOTS, slot .. ':held', 1)
  local json = save_hold(rec)
  add_patient_hold(rec.patient, new_id)
  add_timer(slot, 'h', new_id, deadline)
  local event_id, _, counts = emit_hold(step, 'hold_created', rec, {
    'channel', rec.channel, 'amount', fee, 'deadline', deadline, 'from_booking', old.id,
  }, json)
  return event_id, json, counts, rec
end
