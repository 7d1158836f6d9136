--[[
  reschedule_take: step two of a move across tags (改约 to another day or department):
  the new booking takes a unit of the target slot, in the target's tag, with the old
  booking's payment. Step one (reschedule_mark "begin") marked the old booking as
  moving until until_ms; this step refuses after that instant, so that once it is over
  (plus a clock margin) a process finding no new booking may abort the move for good.
  Step three (reschedule_mark "finish") then cancels the old booking.

  KEYS[1..11] the target department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms          logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed       seeds the anti-scalping delay of units freed by reclaim
  ARGV[3]  new_id          the new booking's id (in this tag)
  ARGV[4]  old_id          the booking it replaces (in another tag)
  ARGV[5]  account_id      the old booking's account
  ARGV[6]  patient_id      the old booking's patient
  ARGV[7]  channel         the old booking's channel
  ARGV[8]  payment_ref     the old booking's payment reference (the payment is kept)
  ARGV[9]  moves           the old booking's number of moves
  ARGV[10] slot_id         the target slot
  ARGV[11] max_amount      the highest fee the old payment covers; -1 = any
  ARGV[12] until_ms        the old booking's move marker ends then: refuse after it
  ARGV[13] token_deadline  when > 0, the patient token's pending deadline: refuse after it
  ARGV[14] reclaim_limit   at most this many due timers of the slot are run first
  ARGV[15] request_id      stamped on the events ("rid"); may be ""
  ARGV[16] hold_until_ms   0: book at once (the old payment covers the fee); > 0: a
                           charged move (a dearer target, the difference to be paid):
                           the new unit is a hold until then, booked by confirm with the
                           difference's payment (max_amount is then -1)

  Returns {code, event_id, hold_json, rem, held, booked, wait, cap, extra}
    0   OK                      the new booking; event_id of booking_rescheduled (a
                                charged move: the new hold, event_id of hold_created)
    1   REPLAY                  new_id exists and was made from old_id: the new booking
   -9   idempotency_key_reused  new_id exists and is something else
   -17  store_fenced
   -18  patient_token_expired   the move marker or the patient token ran out
   -12  slot_not_found
   -11  schedule_not_found
   -2   schedule_suspended
   -1   not_released            extra = release time (ms)
   -3   schedule_past
   -26  reschedule_fee_higher   extra = the target's fee
   -5   patient_rule            extra = "one_per_day"
   -4   sold_out
   -20  invalid_argument        an argument missing, or hold_until_ms not after now
  Emits: booking_rescheduled or, charged, hold_created (plus hold_expired /
    unit_returned for every due timer reclaimed).
  Checks everything before its first write; reclaim writes are whole steps of their own.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "holds"
--- @include "rebook"

local step = new_step(now_ms(ARGV[1]), ARGV[2], ARGV[15])
local hold_until = tonumber(ARGV[16] or '0')
local now = step.now
local new_id, old_id, account, patient = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local channel, payment_ref, moves, slot = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10]
local max_amount, until_ms = tonumber(ARGV[11]), tonumber(ARGV[12])
local token_deadline, reclaim_limit = tonumber(ARGV[13]), tonumber(ARGV[14])
if new_id == '' or old_id == '' or new_id == old_id or account == '' or patient == ''
  or payment_ref == '' or slot == '' or not moves or not max_amount or not until_ms
  or not token_deadline or not reclaim_limit or not hold_until then
  return hold_reply(E_INVALID_ARGUMENT, nil, nil, 'argv')
end
if is_fenced() then
  return hold_reply(E_STORE_FENCED, nil, nil)
end

local existing = load_hold(new_id)
if existing then
  if existing.from == old_id and existing.account == account then
    return hold_reply(REPLAY, nil, existing)
  end
  return hold_reply(E_IDEMPOTENCY_KEY_REUSED, nil, nil)
end
if now > until_ms or (token_deadline > 0 and now > token_deadline) then
  return hold_reply(E_PATIENT_TOKEN_EXPIRED, nil, nil)
end
if hold_until > 0 and hold_until <= now then
  return hold_reply(E_INVALID_ARGUMENT, nil, nil, 'hold_until')  -- a hold born expired
end
-- A charged move may run its steps within one department-day: there the old booking
-- does not count against its own move (one-per-day counts the pair as one booking until
-- the difference is paid or the hold runs out). A move across tags never shares a tag
-- with the old booking, so it passes no exception.
local replaced = hold_until > 0 and old_id or ''
local refused, schedule, sched = rebook_refusal(now, slot, patient, replaced, max_amount)
if refused then
  return hold_reply(refused, nil, nil, schedule)
end
if not unit_free(step, slot, reclaim_limit) then
  return hold_reply(E_SOLD_OUT, nil, nil)
end
local old = {
  id = old_id, account = account, patient = patient, channel = channel,
  payment_ref = payment_ref, moves = moves,
}
local event_id, json, counts
if hold_until > 0 then
  event_id, json, counts = hold_unit(step, new_id, old, slot, schedule, sched.fee, hold_until)
else
  event_id, json, counts = book_unit(step, new_id, old, slot, schedule, sched.fee)
end
return hold_reply(OK, event_id, nil, nil, json, counts)
