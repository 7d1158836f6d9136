--[[
  login_code_check: count one try of an SMS login code for one phone, before the API
  compares it (in constant time), so a crowd of parallel guesses gets no more tries than
  one guesser: the try that reaches ARGV[2] is the last compared, later ones are refused
  until the lock ends. A right code is then consumed by the API (HSETNX of "used:<id>",
  once) and the count deleted.

  KEYS[1]  code      hash written by login_code_issue (mac, id, expires_ms, used:<id>)
  KEYS[2]  failures  string: tries since the last right code; expires ARGV[3] ms after
                     its first try, and ARGV[3] ms after the try that locks
  ARGV[1]  now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2]  max_failures tries that lock the phone
  ARGV[3]  lock_ms      how long the count (and the lock) lasts

  Returns {code, ...}
    0   OK                 compare now: {0, mac, id, tries counted so far (this one too)}
   -60  sms_code_invalid   no code, or the code was used: {-60, tries}
   -61  sms_code_expired   the code is past its life: {-61, tries}
   -62  sms_code_locked    too many tries: {-62, ms until it is unlocked}
   -20  invalid_argument   a number of ARGV is wrong: {-20, 0}
  Emits: nothing (not inventory state).
]]
--- @include "codes"
--- @include "clock"

local code_key, failures_key = KEYS[1], KEYS[2]
local now = now_ms(ARGV[1])
local max_failures, lock_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
if not max_failures or not lock_ms or max_failures < 1 or lock_ms < 1 then
  return {E_INVALID_ARGUMENT, 0}
end

local failures = tonumber(redis.call('GET', failures_key) or '0') or 0
if failures >= max_failures then
  return {E_SMS_CODE_LOCKED, math.max(redis.call('PTTL', failures_key), 1)}
end
local tries = redis.call('INCR', failures_key)
if tries == 1 or tries >= max_failures then
  redis.call('PEXPIRE', failures_key, lock_ms)
end
local record = redis.call('HMGET', code_key, 'mac', 'id', 'expires_ms')
local mac, id, expires = record[1], record[2], tonumber(record[3])
if not mac or not id or not expires or redis.call('HEXISTS', code_key, 'used:' .. id) == 1 then
  return {E_SMS_CODE_INVALID, tries}
end
if now >= expires then
  return {E_SMS_CODE_EXPIRED, tries}
end
return {OK, mac, id, tries}
