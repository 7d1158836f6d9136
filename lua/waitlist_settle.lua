--[[
  waitlist_settle: the worker's second step of a waitlist offer under rules kept on the
  patient's own tag (blacklist, at most N open holds and bookings): the offer was made
  by the step that freed its unit; the worker then took the patient's token for it
  (patient_acquire) and says here what the patient tag answered. A settled offer can be
  paid; a refused one is given back and its unit goes to the next waiting patient.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms     logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed  seeds the anti-scalping delay of a unit given back
  ARGV[3]  hold_id    the offer's hold
  ARGV[4]  verdict    "settled", or the rule that refused it (e.g. blacklisted, max_open)

  Returns {code, event_id}
    0   OK       settled (no event), or refused: the entry is refused and the hold
                 released (event_id of waitlist_refused)
    1   REPLAY   not an unsettled open offer (already settled, or the hold ended; an
                 offer found past its deadline lapses here)
   -17  store_fenced
   -20  invalid_argument
  Emits: on a refusal waitlist_refused, hold_released and the offers its unit makes.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "holds"
--- @include "end_hold"
--- @include "waitlist"

local step = new_step(now_ms(ARGV[1]), ARGV[2])
local hold_id, verdict = ARGV[3], ARGV[4]
if hold_id == '' or verdict == '' then
  return {E_INVALID_ARGUMENT, ''}
end
if is_fenced() then
  return {E_STORE_FENCED, ''}
end
if not redis.call('ZSCORE', K_OFFERS, hold_id) then
  return {REPLAY, ''}
end
local hold = load_hold(hold_id)
if not hold or hold.state ~= 'held' or not hold.entry then
  redis.call('ZREM', K_OFFERS, hold_id)
  return {REPLAY, ''}
end
if hold.deadline <= step.now then
  end_hold(step, hold, 'expired', 'deadline')
  return {REPLAY, ''}
end
redis.call('ZREM', K_OFFERS, hold_id)
if verdict == 'settled' then
  return {OK, ''}
end
local event_id = ''
local rec = load_entry(hold.entry)
if rec and rec.state == 'offered' then
  event_id = end_entry(step, rec, 'refused', verdict)
end
end_hold(step, hold, 'released', 'patient_rule')
return {OK, event_id}
