--[[
  extend: push a hold's deadline out once, when the patient starts paying, never past
  the tag's hard maximum hold lifetime (counted from the hold's creation).

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms      logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed   seeds the anti-scalping delay if the hold turns out to be due
  ARGV[3]  hold_id
  ARGV[4]  account_id  the caller's account; "" = a trusted system caller (payments)

  Returns {code, event_id, hold_json, rem, held, booked, wait, cap, extra}
    0   OK                 the hold with its new deadline; event_id of hold_extended
   -17  store_fenced
   -7   hold_not_found
   -8   not_owner
   -19  already_confirmed  it is a booking already
   -13  hold_not_active    released or cancelled; extra = its state
   -6   hold_expired       past its deadline (expired here if no sweep had)
   -14  already_extended   holds extend once
   -15  extension_limit    the maximum lifetime leaves no room to extend
   -20  invalid_argument
  Emits: hold_extended; or hold_expired when it finds the hold due.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "holds"
--- @include "timers"
--- @include "end_hold"
--- @include "events"

local step = new_step(now_ms(ARGV[1]), ARGV[2])
local now = step.now
local hold_id, account = ARGV[3], ARGV[4]
if hold_id == '' then
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
if rec.extended == 1 then
  return hold_reply(E_ALREADY_EXTENDED, nil, rec)
end
local new_deadline = math.min(rec.deadline + policy_number('extend_ms'),
  rec.created + policy_number('max_hold_ms'))
if new_deadline <= rec.deadline then
  return hold_reply(E_EXTENSION_LIMIT, nil, rec)
end

remove_timer(rec.slot, 'h', rec.id, rec.deadline)
add_timer(rec.slot, 'h', rec.id, new_deadline)
rec.deadline = new_deadline
rec.extended = 1
local json = save_hold(rec)
local event_id, _, counts = emit_hold(step, 'hold_extended', rec, {'deadline', new_deadline},
  json)
return hold_reply(OK, event_id, rec, nil, json, counts)
