--[[
  reopen: open a suspended schedule again; its free units can be reserved at once.

  KEYS[1..8]  the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2]  schedule_id
  ARGV[3]  reason

  Returns {code, event_id}
    0   OK                  reopened
    1   REPLAY              it was already open
   -17  store_fenced
   -11  schedule_not_found
   -20  invalid_argument
  Emits: schedule_reopened.
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
return set_schedule_status(step, ARGV[2], 'open', 'schedule_reopened', ARGV[3])
