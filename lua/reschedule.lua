--[[
  reschedule: move a booking to another slot of the same department-day tag (改约) in
  one step: the old booking is cancelled (reason "rescheduled", its record names the
  new one in "to") and a new booking takes a unit of the target slot with the old
  one's payment. Both units are never held together, and never both lost.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms         logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed      seeds the anti-scalping delay of the freed unit
  ARGV[3]  old_id         the booking to move
  ARGV[4]  new_id         the new booking's id (derived from the request's Idempotency-Key,
                          so a retry lands on the same booking)
  ARGV[5]  account_id     the caller's account; "" = a trusted operator caller
  ARGV[6]  slot_id        the target slot (another slot than the booking's)
  ARGV[7]  max_moves      a booking line may be moved this many times (policy)
  ARGV[8]  max_amount     the highest fee the old payment covers; -1 = any
  ARGV[9]  force          "1": an operator's move (substitution): no cancellation
                          deadline, no reschedule limit
  ARGV[10] reclaim_limit  at most this many due timers of the slot are run first
  ARGV[11] request_id     stamped on the events ("rid"); may be ""

  Returns {code, event_id, hold_json, rem, held, booked, wait, cap, extra}
    0   OK                      the new booking; event_id of booking_rescheduled
    1   REPLAY                  new_id exists and was made from old_id: the new booking
   -9   idempotency_key_reused  new_id exists and is something else
   -17  store_fenced
   -7   hold_not_found
   -8   not_owner
   -13  hold_not_active         the old one is not a booking (extra = its state)
   -25  reschedule_in_progress  the old booking is being moved across tags
   -10  cancel_deadline_passed  extra = the deadline (ms)
   -24  reschedule_limit        extra = max_moves
   -12  slot_not_found
   -11  schedule_not_found
   -2   schedule_suspended
   -1   not_released            extra = release time (ms)
   -3   schedule_past
   -26  reschedule_fee_higher   extra = the target's fee
   -5   patient_rule            extra = "one_per_day"
   -4   sold_out
   -20  invalid_argument
  Emits: booking_cancelled (the old booking) then booking_rescheduled (the new one),
    plus hold_expired / unit_returned for every due timer reclaimed.
  Checks everything before its first write; reclaim writes are whole steps of their own.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "holds"
--- @include "end_hold"
--- @include "rebook"

local step = new_step(now_ms(ARGV[1]), ARGV[2], ARGV[11])
local now = step.now
local old_id, new_id, account, slot = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local max_moves, max_amount = tonumber(ARGV[7]), tonumber(ARGV[8])
local force, reclaim_limit = ARGV[9] == '1', tonumber(ARGV[10])
if old_id == '' or new_id == '' or old_id == new_id or slot == '' or not max_moves
  or not max_amount or not reclaim_limit then
  return hold_reply(E_INVALID_ARGUMENT, nil, nil, 'argv')
end
if is_fenced() then
  return hold_reply(E_STORE_FENCED, nil, nil)
end

local existing = load_hold(new_id)
if existing then
  if existing.from == old_id and (account == '' or existing.account == account) then
    return hold_reply(REPLAY, nil, existing)
  end
  return hold_reply(E_IDEMPOTENCY_KEY_REUSED, nil, nil)
end
local refused, old, extra = move_refusal(old_id, account, now, max_moves, force)
if refused then
  return hold_reply(refused, nil, old, extra)
end
if old.slot == slot then
  return hold_reply(E_INVALID_ARGUMENT, nil, old, 'same slot')
end
local schedule, sched
refused, schedule, sched = rebook_refusal(now, slot, old.patient, old_id, max_amount)
if refused then
  return hold_reply(refused, nil, old, schedule)
end
if not unit_free(step, slot, reclaim_limit) then
  return hold_reply(E_SOLD_OUT, nil, old)
end

old.to = new_id
end_hold(step, old, 'cancelled', 'rescheduled')
local event_id, json, counts = book_unit(step, new_id, old, slot, schedule, sched.fee)
return hold_reply(OK, event_id, nil, nil, json, counts)
