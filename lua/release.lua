--[[
  release: give a held or booked unit back to its slot; a booking being released is
  a cancellation, allowed until the schedule's cancellation deadline.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms      logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed   seeds the anti-scalping delay of the freed unit
  ARGV[3]  hold_id     a hold id (bookings keep the id of the hold they came from)
  ARGV[4]  account_id  the caller's account; "" = a trusted system or operator caller
  ARGV[5]  reason      why: patient_released, patient_cancelled, his_rejected, suspended, ...
  ARGV[6]  force       "1" ignores the cancellation deadline (HIS refusal, suspension)
  ARGV[7]  request_id  optional: the API request's id, stamped on the events ("rid")

  Returns {code, event_id, hold_json, rem, held, booked, wait, cap, extra}
    0   OK                      released (hold) or cancelled (booking)
    1   REPLAY                  it had already ended: its record, unchanged
   -17  store_fenced
   -7   hold_not_found
   -8   not_owner
   -6   hold_expired            the hold was past its deadline (expired here if no sweep had)
   -10  cancel_deadline_passed  extra = the deadline (ms)
   -25  reschedule_in_progress  the booking is being moved to another day or department
                                (reschedule_mark); a forced release goes ahead
   -20  invalid_argument
  Emits: hold_released or booking_cancelled; hold_expired when it finds the hold due.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "holds"
--- @include "schedules"
--- @include "end_hold"
--- @include "events"

local step = new_step(now_ms(ARGV[1]), ARGV[2], ARGV[7])
local now = step.now
local hold_id, account, reason, force = ARGV[3], ARGV[4], ARGV[5], ARGV[6] == '1'
if hold_id == '' or reason == '' then
  return hold_reply(E_INVALID_ARGUMENT, nil, nil, 'argv')
end
if is_fenced() then
  return hold_reply(E_STORE_FENCED, nil, nil)
end

local rec = load_hold(hold_id)
if not rec then
  return hold_reply(E_HOLD_NOT_FOUND, nil, nil)
end
if account ~= '' and rec.account ~= account then
  return hold_reply(E_NOT_OWNER, nil, nil)
end
if rec.state ~= 'held' and rec.state ~= 'booked' then
  return hold_reply(REPLAY, nil, rec)
end
if rec.state == 'held' then
  if rec.deadline <= now then
    local event_id, json, counts = end_hold(step, rec, 'expired', 'deadline')
    return hold_reply(E_HOLD_EXPIRED, event_id, rec, nil, json, counts)
  end
  local event_id, json, counts = end_hold(step, rec, 'released', reason)
  return hold_reply(OK, event_id, rec, nil, json, counts)
end

if not force then
  if (rec.moving or '') ~= '' then
    return hold_reply(E_RESCHEDULE_IN_PROGRESS, nil, rec)
  end
  local sched = schedule_fields(rec.schedule)
  local deadline = sched and math.min(sched.cancel_deadline_ms, sched.start_ms) or 0
  if now > deadline then
    return hold_reply(E_CANCEL_DEADLINE_PASSED, nil, rec, deadline)
  end
end
local event_id, json, counts = end_hold(step, rec, 'cancelled', reason)
return hold_reply(OK, event_id, rec, nil, json, counts)
