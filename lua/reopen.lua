--[[
  reopen: open a suspended schedule again; its free units can be reserved at once,
  after its waitlist has had them (offered in this step).

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2]  schedule_id
  ARGV[3]  reason

  Returns {code, event_id}
    0   OK                  reopened
    1   REPLAY              it was already open
   -17  store_fenced
   -11  schedule_not_found
   -20  invalid_argument
  Emits: schedule_reopened (then waitlist_offered / waitlist_refused for the waitlist).
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "schedule_status"
--- @include "waitlist"

local step = new_step(now_ms(ARGV[1]))
if ARGV[2] == '' or ARGV[3] == '' then
  return {E_INVALID_ARGUMENT, ''}
end
if is_fenced() then
  return {E_STORE_FENCED, ''}
end
local reply = set_schedule_status(step, ARGV[2], 'open', 'schedule_reopened', ARGV[3])
if reply[1] == OK then
  for _, slot in ipairs(schedule_slots(ARGV[2])) do
    offer_free_units(step, slot)
  end
end
return reply
