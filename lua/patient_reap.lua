--[[
  patient_reap: the compensation sweep of the two-step reservation. The caller looked
  up each token's hold in its own tag and says what it found; this script re-checks
  the token's state and drops what is certainly stale.

  KEYS[1..3]  the patient tag's keys, see includes/patient.lua
  ARGV[1]  now_ms     logical clock in ms; 0 = the server's TIME
  ARGV[2]  margin_ms  clock margin between tags' servers
  ARGV[3..] pairs of hold_id, verdict:
           "ended"    the hold ended (released, expired, cancelled, visit over): drop
           "missing"  no such hold: drop only once the pending deadline plus margin
                      has passed (then reserve can no longer create it)
           "open"     the hold is open: settle the token (a step two that was lost)

  Returns {code, dropped, settled}
    0   OK
   -20  invalid_argument
  Emits: nothing; tokens are derived state.
]]
--- @include "codes"
--- @include "clock"
--- @include "patient"

local now = now_ms(ARGV[1])
local margin = tonumber(ARGV[2])
if not margin or #ARGV % 2 ~= 0 then
  return {E_INVALID_ARGUMENT, 0, 0}
end
local dropped, settled = 0, 0
for i = 3, #ARGV, 2 do
  local hold_id, verdict = ARGV[i], ARGV[i + 1]
  local score = tonumber(redis.call('ZSCORE', K_TOKENS, hold_id))
  if score then
    if verdict == 'ended' or (verdict == 'missing' and score ~= math.huge
      and score + margin < now) then
      dropped = dropped + redis.call('ZREM', K_TOKENS, hold_id)
    elseif verdict == 'open' and score ~= math.huge then
      redis.call('ZADD', K_TOKENS, 'inf', hold_id)
      settled = settled + 1
    end
  end
end
return {OK, dropped, settled}
