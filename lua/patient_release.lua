--[[
  patient_release: drop the tokens of holds that did not happen or have ended
  (reserve refused, hold released or expired, booking cancelled).

  KEYS[1..3]  the patient tag's keys, see includes/patient.lua
  ARGV[1..n]  hold ids

  Returns {code, removed}
    0   OK  removed = how many tokens were there
  Emits: nothing; tokens are derived state.
]]
--- @include "codes"
--- @include "patient"

if #ARGV == 0 then
  return {OK, 0}
end
return {OK, redis.call('ZREM', K_TOKENS, unpack(ARGV))}
