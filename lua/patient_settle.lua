--[[
  patient_settle: step two of the two-step reservation: the hold exists, so its
  token becomes permanent (until patient_release or patient_reap drops it).

  KEYS[1..3]  the patient tag's keys, see includes/patient.lua
  ARGV[1]  hold_id

  Returns {code}
    0   OK  (also when the token had been reaped: settling re-adds it, because the
            hold exists and must count)
   -20  invalid_argument
  Emits: nothing; tokens are derived state.
]]
--- @include "codes"
--- @include "patient"

if ARGV[1] == '' then
  return {E_INVALID_ARGUMENT}
end
redis.call('ZADD', K_TOKENS, 'inf', ARGV[1])
return {OK}
