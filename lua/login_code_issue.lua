--[[
  login_code_issue: keep a new SMS login code for one phone, replacing any earlier one,
  unless the phone is locked by too many wrong codes. Only the code's HMAC is kept
  (computed by the API under its code key); the phone appears in no key name (the
  caller passes its HMAC too).

  KEYS[1]  code      hash: mac (the code's HMAC, hex), id (this code's random id),
                     expires_ms; "used:<id>" once a code is consumed (by the API's
                     HSETNX). Kept past the code's life so a late try reads "expired".
  KEYS[2]  failures  string: wrong tries counted by login_code_check; while it is at
                     ARGV[4] or above the phone is locked (until the key expires)
  ARGV[1]  now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2]  mac          the new code's HMAC (hex)
  ARGV[3]  id           the new code's random id
  ARGV[4]  max_failures wrong tries that lock the phone
  ARGV[5]  ttl_ms       the code's life
  ARGV[6]  keep_ms      how long the record is kept (at least ttl_ms)

  Returns {code, ms}
    0   OK                 the code is kept: {0, expires_ms}
   -62  sms_code_locked    the phone is locked: {-62, ms until it is unlocked}
   -20  invalid_argument   a number of ARGV is wrong: {-20, 0}
  Emits: nothing (not inventory state).
]]
--- @include "codes"
--- @include "clock"

local code_key, failures_key = KEYS[1], KEYS[2]
local now = now_ms(ARGV[1])
local mac, id = ARGV[2], ARGV[3]
local max_failures, ttl_ms, keep_ms = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if not max_failures or not ttl_ms or not keep_ms or max_failures < 1 or ttl_ms < 1
    or keep_ms < ttl_ms or mac == '' or id == '' then
  return {E_INVALID_ARGUMENT, 0}
end

local failures = tonumber(redis.call('GET', failures_key) or '0') or 0
if failures >= max_failures then
  return {E_SMS_CODE_LOCKED, math.max(redis.call('PTTL', failures_key), 1)}
end
redis.call('DEL', code_key)
redis.call('HSET', code_key, 'mac', mac, 'id', id, 'expires_ms', now + ttl_ms)
redis.call('PEXPIRE', code_key, keep_ms)
return {OK, now + ttl_ms}
