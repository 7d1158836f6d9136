--[[
  waitlist_leave: a patient leaves a schedule's waitlist. An offer the entry holds is
  given back with it, and its unit goes to the next waiting patient in this step.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms      logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed   seeds the anti-scalping delay of a unit given back
  ARGV[3]  entry_id
  ARGV[4]  account_id  the caller's account; "" = a trusted system or operator caller
  ARGV[5]  request_id  optional: the API request's id, stamped on the events ("rid")

  Returns {code, event_id, entry_json}
    0   OK                        left (waiting, or offered and not yet paid)
    1   REPLAY                    the entry had already ended (taken, lapsed, declined,
                                  refused, left; an offer found past its deadline
                                  lapses here): its record
   -17  store_fenced
   -32  waitlist_entry_not_found  also another account's entry
   -20  invalid_argument
  Emits: waitlist_left, and hold_released for an offer given back (then the offers its
    unit makes); or hold_expired and waitlist_lapsed for an offer found past its deadline.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "holds"
--- @include "end_hold"
--- @include "waitlist"

local step = new_step(now_ms(ARGV[1]), ARGV[2], ARGV[5])
local now = step.now
local entry_id, account = ARGV[3], ARGV[4]
if entry_id == '' then
  return {E_INVALID_ARGUMENT, '', ''}
end
if is_fenced() then
  return {E_STORE_FENCED, '', ''}
end
local rec = load_entry(entry_id)
if not rec or (account ~= '' and rec.account ~= account) then
  return {E_WAITLIST_ENTRY_NOT_FOUND, '', ''}
end
if rec.state == 'offered' then
  local hold = load_hold(rec.hold)
  if hold and hold.state == 'held' and hold.deadline <= now then
    end_hold(step, hold, 'expired', 'deadline')
    return {REPLAY, '', cjson.encode(load_entry(entry_id))}
  end
  if hold and hold.state == 'held' then
    local event_id = end_entry(step, rec, 'left', 'patient_left')
    end_hold(step, hold, 'released', 'waitlist_left')
    return {OK, event_id, cjson.encode(rec)}
  end
  if not hold or hold.state ~= 'booked' then
    -- The offer ended without its entry learning it (never expected): the entry ends.
    local event_id = end_entry(step, rec, 'left', 'patient_left')
    return {OK, event_id, cjson.encode(rec)}
  end
  return {REPLAY, '', cjson.encode(rec)}
end
if rec.state ~= 'waiting' then
  return {REPLAY, '', cjson.encode(rec)}
end
local event_id = end_entry(step, rec, 'left', 'patient_left')
return {OK, event_id, cjson.encode(rec)}
