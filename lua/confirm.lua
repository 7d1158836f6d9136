--[[
  confirm: turn a hold into a booking once it is paid, before its deadline.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms        logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed     seeds the anti-scalping delay if the hold turns out to be due
  ARGV[3]  hold_id
  ARGV[4]  account_id    the caller's account; "" = a trusted system caller (payments)
  ARGV[5]  payment_ref   the payment provider's reference
  ARGV[6]  request_id    optional: the API request's id, stamped on the events ("rid")

  Returns {code, event_id, hold_json, rem, held, booked, wait, cap, extra}
    0   OK                 the booking; event_id of booking_confirmed
    1   REPLAY             already confirmed with this payment_ref: the booking
   -17  store_fenced
   -7   hold_not_found
   -8   not_owner
   -19  already_confirmed  confirmed before with another payment_ref
   -13  hold_not_active    released or cancelled; extra = its state
   -6   hold_expired       past its deadline (expired here if no sweep had yet)
   -2   schedule_suspended
   -33  waitlist_offer_unsettled  a waitlist offer whose patient-tag rules the worker
                                  has not checked yet (SlotStore.confirm checks them)
   -20  invalid_argument
  Emits: booking_confirmed (and waitlist_taken for a waitlist offer); or hold_expired
    when it finds the hold due.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "holds"
--- @include "schedules"
--- @include "timers"
--- @include "end_hold"
--- @include "events"

local step = new_step(now_ms(ARGV[1]), ARGV[2], ARGV[6])
local now = step.now
local hold_id, account, payment_ref = ARGV[3], ARGV[4], ARGV[5]
if hold_id == '' or payment_ref == '' then
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
if rec.state == 'booked' then
  if rec.payment_ref == payment_ref then
    return hold_reply(REPLAY, nil, rec)
  end
  return hold_reply(E_ALREADY_CONFIRMED, nil, rec)
end
if rec.state == 'expired' then
  return hold_reply(E_HOLD_EXPIRED, nil, rec)
end
if rec.state ~= 'held' then
  return hold_reply(E_HOLD_NOT_ACTIVE, nil, rec, rec.state)
end
if rec.deadline <= now then
  local event_id, json, counts = end_hold(step, rec, 'expired', 'deadline')
  return hold_reply(E_HOLD_EXPIRED, event_id, rec, nil, json, counts)
end
local sched = schedule_fields(rec.schedule)
if not sched or sched.status ~= 'open' then
  return hold_reply(E_SCHEDULE_SUSPENDED, nil, rec)
end
if rec.entry and redis.call('ZSCORE', K_OFFERS, rec.id) then
  return hold_reply(E_WAITLIST_OFFER_UNSETTLED, nil, rec)
end

redis.call('HINCRBY', K_SLOTS, rec.slot .. ':held', -1)
redis.call('HINCRBY', K_SLOTS, rec.slot .. ':booked', 1)
remove_timer(rec.slot, 'h', rec.id, rec.deadline)
rec.state = 'booked'
rec.payment_ref = payment_ref
rec.confirmed = now
local json = save_hold(rec)
local event_id, _, counts = emit_hold(step, 'booking_confirmed', rec, {
  'amount', rec.amount, 'payment_ref', payment_ref,
}, json)
if rec.entry then
  take_offer_entry(step, rec)
end
return hold_reply(OK, event_id, rec, nil, json, counts)
