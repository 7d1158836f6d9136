--[[
  suspend: close a schedule (停诊). Reserves and confirms on it are refused from now;
  its open holds and bookings stay as they are, for the caller to release with
  reason "suspended" (the HIS flow cancels and refunds them).

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2]  schedule_id
  ARGV[3]  reason       e.g. doctor_unavailable, his_sync

  Returns {code, event_id}
    0   OK                  suspended
    1   REPLAY              it was already suspended
   -17  store_fenced
   -11  schedule_not_found
   -20  invalid_argument
  Emits: schedule_suspended.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "schedule_status"

local step = new_step(now_ms(ARGV[1]))
if ARGV[2] == '' or ARGV[3] == '' then
  return {E_INVALID_ARGUMENT, ''}
end
if is_fenced() then
  return {E_STORE_FENCED, ''}
end
return set_schedule_status(step, ARGV[2], 'suspended', 'schedule_suspended', ARGV[3])
