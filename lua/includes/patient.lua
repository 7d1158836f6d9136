--[[
  patient: the keys of a patient tag, bound to named locals, for the rules that span
  department-day tags (at most N open, at most M within 7 days, the blacklist).
  inventory/store/keys.py builds them:
    KEYS[1] tokens  zset  "<hold_id>" -> the token's pending deadline (ms), or +inf
                          once settled: one token per open hold or booking of the patient
    KEYS[2] bans    hash  "<hospital_id>" or "*" -> banned until (ms)
    KEYS[3] outbox  stream the patient tag's events (bans)

  The two-step reservation: patient_acquire takes a pending token, reserve (in the
  slot's tag) refuses once the token's deadline has passed, then patient_settle
  makes the token permanent, or patient_release drops it when reserve refused. A
  process that dies between the steps leaves a pending token: patient_reap drops it
  once its deadline (plus a clock margin) is over and the hold does not exist, which
  is then certain never to happen.

  Provides: K_TOKENS, K_BANS, K_PATIENT_OUTBOX (constants: the key names above).
  Expects: the three keys as KEYS[1..3].
]]
local K_TOKENS, K_BANS, K_PATIENT_OUTBOX = KEYS[1], KEYS[2], KEYS[3]
