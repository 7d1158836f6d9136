--[[
  patient_ban: put a patient on a hospital's blacklist (e.g. after three no-shows),
  or lift the ban with until_ms = 0.

  KEYS[1..3]  the patient tag's keys, see includes/patient.lua
  ARGV[1]  now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2]  patient_id   (for the event)
  ARGV[3]  hospital_id  or "*" for every hospital
  ARGV[4]  until_ms     banned until then; 0 lifts the ban
  ARGV[5]  reason

  Returns {code, event_id}
    0   OK
   -20  invalid_argument
  Emits: patient_banned (or patient_unbanned) to the patient tag's outbox.
]]
--- @include "codes"
--- @include "clock"
--- @include "patient"

local now = now_ms(ARGV[1])
local patient, hospital, until_ms, reason = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if patient == '' or hospital == '' or not until_ms or until_ms < 0 or reason == '' then
  return {E_INVALID_ARGUMENT, ''}
end
local event_type = 'patient_banned'
if until_ms == 0 then
  redis.call('HDEL', K_BANS, hospital)
  event_type = 'patient_unbanned'
else
  redis.call('HSET', K_BANS, hospital, until_ms)
end
local event_id = redis.call('XADD', K_PATIENT_OUTBOX, '*', 'type', event_type, 'at', now,
  'patient', patient, 'hospital', hospital, 'until', until_ms, 'reason', reason)
return {OK, event_id}
