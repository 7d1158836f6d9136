--[[
  patient_acquire: step one of a reserve under the rules that span tags: check the
  blacklist and the at-most-N-open rule, and take a pending token for the hold.

  KEYS[1..3]  the patient tag's keys, see includes/patient.lua
  ARGV[1]  now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2]  hold_id      the hold the token is for
  ARGV[3]  hospital_id  whose blacklist applies
  ARGV[4]  max_open     at most this many open holds plus bookings; 0 = no limit
  ARGV[5]  window_ms    the token's pending life: reserve must happen before it ends
  ARGV[6]  check_bans   "1" when the hospital's blacklist applies, "0" when it is off
  ARGV[7]  max_7_days   at most this many open holds plus bookings whose visit dates lie
                        within any 7 consecutive days; 0 (or absent) = no limit. Visit
                        dates come from the hold ids (includes/visit_days.lua); tokens
                        of days before today do not count (their visits are over)
  ARGV[8]  replaces     a booking the new hold replaces (a reschedule's old booking), or
                        "" (or absent): its token counts for neither rule, because the
                        two never stand together once the move is done

  Returns {code, token_deadline_ms, rule, banned_until_ms, token_ids...}
    0   OK            a new pending token; reserve must pass token_deadline_ms
    1   REPLAY        the hold has a token already (a retry); token_deadline_ms is
                      its pending deadline, or 0 once settled
   -5   patient_rule  rule = "blacklisted" (banned_until_ms set) or "max_open"
                      (token_ids = the patient's tokens, for the caller to reap)
   -23  patient_weekly_limit  rule = "max_in_7_days"; token_ids = the tokens of visit
                      days within 6 days of the hold's, for the caller to reap
   -20  invalid_argument
  Emits: nothing; tokens are derived state, rebuilt from holds and bookings.
]]
--- @include "codes"
--- @include "clock"
--- @include "patient"
--- @include "visit_days"

local now = now_ms(ARGV[1])
local hold_id, hospital = ARGV[2], ARGV[3]
local max_open, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_7_days = tonumber(ARGV[7] or '0')
local day = visit_day(hold_id)
if hold_id == '' or hospital == '' or not max_open or not window or window <= 0
  or not max_7_days or (max_7_days > 0 and not day) then
  return {E_INVALID_ARGUMENT, 0, 'argv', 0}
end

-- A retry of a reserve that already took its token is a replay: it must return the
-- same hold, so it is answered before the rules (a ban decided since changes nothing).
local score = redis.call('ZSCORE', K_TOKENS, hold_id)
if score then
  local pending = tonumber(score)
  if pending == math.huge then pending = 0 end
  return {REPLAY, pending, '', 0}
end
if ARGV[6] == '1' then
  local bans = redis.call('HMGET', K_BANS, hospital, '*')
  local banned_until = math.max(tonumber(bans[1]) or 0, tonumber(bans[2]) or 0)
  if banned_until > now then
    return {E_PATIENT_RULE, 0, 'blacklisted', banned_until}
  end
end
local replaces = ARGV[8] or ''
local replaced = 0
if replaces ~= '' and redis.call('ZSCORE', K_TOKENS, replaces) then
  replaced = 1
end
if max_open > 0 and redis.call('ZCARD', K_TOKENS) - replaced >= max_open then
  local reply = {E_PATIENT_RULE, 0, 'max_open', 0}
  for _, id in ipairs(redis.call('ZRANGE', K_TOKENS, 0, -1)) do
    reply[#reply + 1] = id
  end
  return reply
end
if max_7_days > 0 then
  -- Every 7-day window that would contain the new visit day, [first, first + 6] for
  -- first in day-6 .. day, must hold fewer than max_7_days tokens already.
  local today = local_day(now)
  local near, near_ids = {}, {}
  for _, id in ipairs(redis.call('ZRANGE', K_TOKENS, 0, -1)) do
    local other = visit_day(id)
    if other and id ~= replaces and other >= today and math.abs(other - day) <= 6 then
      near[#near + 1] = other
      near_ids[#near_ids + 1] = id
    end
  end
  for first = day - 6, day do
    local count = 0
    for _, other in ipairs(near) do
      if other >= first and other <= first + 6 then
        count = count + 1
      end
    end
    if count >= max_7_days then
      local reply = {E_PATIENT_WEEKLY_LIMIT, 0, 'max_in_7_days', 0}
      for _, id in ipairs(near_ids) do
        reply[#reply + 1] = id
      end
      return reply
    end
  end
end
redis.call('ZADD', K_TOKENS, now + window, hold_id)
return {OK, now + window, '', 0}
